"""WebSocket by hand, for clients no library would be: ones that never read, flood pings or
send frames in odd shapes. Blocking sockets, every wait bounded by the socket timeout."""

from __future__ import annotations

import base64
import os
import socket
import struct

import numpy as np


def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One client->server frame (masked, as RFC 6455 requires of clients)."""
    n = len(payload)
    head = struct.pack("!B", (0x80 if fin else 0) | opcode)
    if n < 126:
        head += struct.pack("!B", 0x80 | n)
    elif n < 1 << 16:
        head += struct.pack("!BH", 0x80 | 126, n)
    else:
        head += struct.pack("!BQ", 0x80 | 127, n)
    mask = os.urandom(4)
    masked = np.frombuffer(payload, np.uint8) ^ np.resize(np.frombuffer(mask, np.uint8), n)
    return head + mask + masked.tobytes()


def open_raw(port: int, rcvbuf: int | None = None, timeout: float = 30.0) -> socket.socket:
    """A socket past the handshake on ``/v1/stream``. ``rcvbuf`` is set *before* connecting:
    shrinking it on an open connection leaves the peer a window larger than the buffer, the
    kernel drops what it advertised room for, and both ends stall in retransmission backoff
    (seen on loopback under load: a 30-s stall instead of the behaviour under test)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    assert s.recv(4096).startswith(b"HTTP/1.1 101")
    return s
