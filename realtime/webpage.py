"""The browser client (``GET /`` and the other files of ``realtime/web/``) and the server's plain
HTTP responses. The files are read once, at start-up, into a fixed table: no request path ever
reaches the file system.
"""

from __future__ import annotations

import http
import re
from pathlib import Path

from websockets.datastructures import Headers
from websockets.http11 import Response

__all__ = ["CONTENT_TYPES", "WEB_DIR", "file_response", "http_response", "load_web_files"]

WEB_DIR = Path(__file__).resolve().parent / "web"
_WEB_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")

#: The only files served, by extension (anything else in realtime/web/ is not served).
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
    ".json": "application/json", ".map": "application/json", ".svg": "image/svg+xml",
    ".png": "image/png", ".ico": "image/x-icon", ".wasm": "application/wasm", ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}


def load_web_files(root: Path) -> dict[str, tuple[bytes, str]]:
    """URL path -> (body, content type) for the files of ``root`` and ``root/vendor``."""
    files: dict[str, tuple[bytes, str]] = {}
    for folder, prefix in ((root, "/"), (root / "vendor", "/vendor/")):
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir()):
            ctype = CONTENT_TYPES.get(f.suffix.lower())
            if ctype and _WEB_NAME.fullmatch(f.name) and f.is_file() and not f.is_symlink():
                files[prefix + f.name] = (f.read_bytes(), ctype)
    if "/index.html" in files:
        files["/"] = files["/index.html"]
    return files


def http_response(status: http.HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-cache"), ("X-Content-Type-Options", "nosniff"),
                       ("Connection", "close")])
    return Response(status.value, status.phrase, headers, body)


def file_response(files: dict[str, tuple[bytes, str]], path: str) -> Response:
    """The file at URL ``path`` in ``files`` (from :func:`load_web_files`), or 404."""
    page = files.get(path)
    if page is not None:
        return http_response(http.HTTPStatus.OK, *page)
    if path == "/":
        return http_response(http.HTTPStatus.NOT_FOUND, b"browser page not installed (realtime/web/index.html)\n",
                             CONTENT_TYPES[".txt"])
    return http_response(http.HTTPStatus.NOT_FOUND, b"not found\n", CONTENT_TYPES[".txt"])
