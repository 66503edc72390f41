"""realtime.access alone: who may connect, decided from the options and the request's headers.
The same checks on a real server are in test_server.py."""

from __future__ import annotations

import http

import pytest
from websockets.datastructures import Headers
from websockets.http11 import Request

from realtime.access import (
    InsecureBindError,
    authorized,
    check_bind,
    check_handshake,
    check_headers,
    is_loopback,
)
from realtime.options import ServerOptions

OPEN = ServerOptions()
TOKEN = ServerOptions(token="secret")


def request(path: str = "/v1/stream", **headers: str | list[str]) -> Request:
    h = Headers()
    for name, value in headers.items():
        for v in value if isinstance(value, list) else [value]:
            h[name] = v
    return Request(path, h)


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost", True), ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("192.168.1.2", False), ("detector.example", False),
    ("LOCALHOST", False),  # a bind address, not a Host header: spelled as given
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_bind_beyond_loopback_needs_a_token_or_insecure() -> None:
    check_bind(OPEN)
    check_bind(ServerOptions(host="0.0.0.0", token="t"))
    check_bind(ServerOptions(host="0.0.0.0", insecure=True))
    with pytest.raises(InsecureBindError, match="no token is set"):
        check_bind(ServerOptions(host="0.0.0.0"))


@pytest.mark.parametrize(("host", "ok"), [
    ("localhost", True), ("localhost:8765", True), ("LOCALHOST.", True), ("127.0.0.1:1", True),
    ("[::1]:8765", True), ("[::1]", True), ("[::1", False), ("::1", True),
    ("evil.example", False), ("evil.example:8765", False), ("127.0.0.1.evil.example", False), ("", False),
])
def test_without_a_token_the_host_header_must_be_loopback(host: str, ok: bool) -> None:
    denied = check_headers(OPEN, request(Host=host).headers)
    assert (denied is None) is ok, denied
    if not ok:
        assert denied.status == http.HTTPStatus.FORBIDDEN and "not served without a token" in denied.why
    assert check_headers(TOKEN, request(Host=host).headers) is None
    assert check_headers(ServerOptions(insecure=True), request(Host=host).headers) is None


@pytest.mark.parametrize("name", ["Host", "Origin", "Authorization"])
def test_repeated_headers_are_a_bad_request(name: str) -> None:
    headers = {"Host": "localhost", name: ["a", "b"]}
    denied = check_headers(TOKEN, request(**headers).headers)
    assert denied == (http.HTTPStatus.BAD_REQUEST, f"more than one {name} header")


@pytest.mark.parametrize(("allowed", "origin", "ok"), [
    ([], None, True), ([], "http://localhost:8765", True), ([], "https://localhost:8765", True),
    ([], "http://localhost:9999", False), ([], "https://evil.example", False),
    (["https://app.example"], "https://app.example", True), (["https://app.example"], "http://localhost:8765", False),
    (["*"], "https://evil.example", True),
])
def test_origin(allowed: list[str], origin: str | None, ok: bool) -> None:
    headers = {"Host": "localhost:8765"} | ({"Origin": origin} if origin else {})
    denied = check_handshake(ServerOptions(allowed_origins=allowed), request(**headers))
    assert (denied is None) is ok, denied
    if not ok:
        assert denied.status == http.HTTPStatus.FORBIDDEN and "not allowed" in denied.why


@pytest.mark.parametrize(("path", "authorization", "allow_url_token", "status"), [
    ("/v1/stream", None, False, None),  # no token yet: it may come in the start message
    ("/v1/stream", "Bearer secret", False, None),
    ("/v1/stream", "bearer  secret ", False, None),
    ("/v1/stream", "Bearer wrong", False, http.HTTPStatus.UNAUTHORIZED),
    ("/v1/stream", "Basic c2VjcmV0", False, http.HTTPStatus.UNAUTHORIZED),
    ("/v1/stream?token=secret", None, False, http.HTTPStatus.UNAUTHORIZED),  # never in a URL, unless allowed
    ("/v1/stream?token=secret", None, True, None),
    ("/v1/stream?token=wrong", None, True, http.HTTPStatus.UNAUTHORIZED),
    ("/v1/stream?token=", None, True, http.HTTPStatus.UNAUTHORIZED),
])
def test_token_before_the_handshake(path: str, authorization: str | None, allow_url_token: bool,
                                    status: http.HTTPStatus | None) -> None:
    opts = ServerOptions(token="secret", allow_url_token=allow_url_token)
    req = request(path, Host="localhost", **({"Authorization": authorization} if authorization else {}))
    denied = check_handshake(opts, req)
    assert (denied.status if denied else None) == status, denied
    assert check_handshake(OPEN, req) is None  # no token set: nothing to check


def test_authorized_by_header_url_or_the_protocols_own_field() -> None:
    assert authorized(OPEN, None)
    assert not authorized(TOKEN, None)
    assert not authorized(TOKEN, None, None, "wrong", "\ud800")
    assert authorized(TOKEN, None, None, "secret")
    assert authorized(TOKEN, request(Authorization="Bearer secret"))
    assert not authorized(TOKEN, request("/v1/stream?token=secret"))
    assert authorized(ServerOptions(token="secret", allow_url_token=True), request("/v1/stream?token=secret"))
