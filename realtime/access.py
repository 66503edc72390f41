"""Who may use the server (docs/server.md, "Access"): the token, from an ``Authorization: Bearer``
header, the URL (only with ``allow_url_token``: URLs end up in proxy logs and browser history)
or a protocol's own field; the browser ``Origin``; and without a token, loopback only, both where
the server listens and in every request's ``Host`` header.
"""

from __future__ import annotations

import hmac
import http
import ipaddress
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import parse_qs

from .errors import RealtimeError

if TYPE_CHECKING:
    from websockets.datastructures import Headers
    from websockets.http11 import Request

    from .options import ServerOptions

__all__ = ["Denied", "InsecureBindError", "authorized", "check_bind", "check_handshake", "check_headers",
           "is_loopback"]


class InsecureBindError(RealtimeError, ValueError):
    """Listening beyond loopback without a token (and without ``insecure``)."""


class Denied(NamedTuple):
    """A request refused before the WebSocket handshake."""

    status: http.HTTPStatus
    why: str


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (anything else may be reachable)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _loopback_host(value: str) -> bool:
    """Whether a ``Host`` header names this machine: ``localhost`` or a loopback address, any port."""
    if value.startswith("["):  # [::1]:8765
        host = value[1:value.find("]")] if "]" in value else ""
    else:
        host = value.rpartition(":")[0] if value.count(":") == 1 else value
    return is_loopback(host.lower().rstrip("."))


def _bearer(headers: Headers) -> str | None:
    value = headers.get("Authorization")
    if value is None:
        return None
    scheme, _, credentials = value.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def _url_token(request: Request) -> str | None:
    """The ``token`` query parameter, if any (``""`` when present but empty)."""
    query = request.path.partition("?")[2]
    values = parse_qs(query, keep_blank_values=True).get("token") if query else None
    return values[0] if values else None


def _token_ok(expected: str, given: str | None) -> bool:
    # Constant time: the comparison must not reveal how many leading characters were right.
    # surrogatepass: JSON may carry a lone surrogate ("\ud800"), which is a wrong token, not a crash.
    return given is not None and hmac.compare_digest(expected.encode("utf-8", "surrogatepass"),
                                                     given.encode("utf-8", "surrogatepass"))


def _origin_ok(options: ServerOptions, headers: Headers) -> bool:
    origin = headers.get("Origin")
    if origin is None:  # not a browser: origins only defend against cross-site pages
        return True
    allowed = options.allowed_origins
    if allowed:
        return "*" in allowed or origin in allowed
    # Default: same origin only (the page this server serves).
    host = headers.get("Host", "")
    return origin in (f"http://{host}", f"https://{host}")


def check_bind(options: ServerOptions) -> None:
    """Raise :class:`InsecureBindError` for a listener beyond loopback without a token."""
    if options.token is None and not options.insecure and not is_loopback(options.host):
        raise InsecureBindError(f"host {options.host!r} is reachable beyond this machine and no token is set; set "
                                "REALTIME_DETECT_TOKEN (or --token), or pass --insecure to serve it without --token")


def check_headers(options: ServerOptions, headers: Headers) -> Denied | None:
    """Every request (pages and ``/healthz`` too): one ``Host``, ``Origin`` and ``Authorization``
    at most, and without a token, a ``Host`` that names this machine."""
    for name in ("Host", "Origin", "Authorization"):
        # Headers.get() raises on repeated headers; and two answers to one question is a refusal.
        if len(headers.get_all(name)) > 1:
            return Denied(http.HTTPStatus.BAD_REQUEST, f"more than one {name} header")
    if options.token is None and not options.insecure and not _loopback_host(headers.get("Host", "")):
        # DNS rebinding: a page from evil.example whose name now resolves to 127.0.0.1 sends
        # Host and Origin evil.example, which pass the same-origin check; the Host does not.
        return Denied(http.HTTPStatus.FORBIDDEN,
                      f"Host {headers.get('Host', '')[:100]!r} not served without a token "
                      "(only localhost and loopback addresses are); set a token or pass --insecure")
    return None


def check_handshake(options: ServerOptions, request: Request) -> Denied | None:
    """A WebSocket request: its ``Origin``; and its bearer or URL token, when it has one and the
    server has a token (a connection without one may still give it in its protocol)."""
    if not _origin_ok(options, request.headers):
        return Denied(http.HTTPStatus.FORBIDDEN, f"origin {request.headers.get('Origin', '')[:100]!r} not allowed")
    token = options.token
    if token is None:
        return None
    given = _bearer(request.headers)
    if given is not None and not _token_ok(token, given):
        return Denied(http.HTTPStatus.UNAUTHORIZED, "wrong bearer token")
    in_url = _url_token(request)
    if in_url is not None and not options.allow_url_token:
        return Denied(http.HTTPStatus.UNAUTHORIZED,
                      "token in the URL not accepted (URLs end up in logs and histories); "
                      "send 'Authorization: Bearer', or \"token\" in the start message")
    if in_url is not None and not _token_ok(token, in_url):
        return Denied(http.HTTPStatus.UNAUTHORIZED, "wrong token in the URL")
    return None


def authorized(options: ServerOptions, request: Request | None, *given: str | None) -> bool:
    """Whether a connection holds the token (if one is set): in its ``Authorization: Bearer``
    header, in the URL (with ``allow_url_token``), or in ``given`` (a protocol's own field)."""
    token = options.token
    if token is None:
        return True
    if request is not None and (_token_ok(token, _bearer(request.headers)) or (
            options.allow_url_token and _token_ok(token, _url_token(request)))):
        return True
    return any(_token_ok(token, g) for g in given)
