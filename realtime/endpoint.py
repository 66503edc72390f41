"""What the server needs to speak a protocol on a WebSocket path: :class:`Endpoint`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from websockets.http11 import Request

    from .connection import Connection
    from .server import DetectorServer

__all__ = ["Endpoint"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A WebSocket path the server speaks a protocol on. Every endpoint gets the same checks
    before the handshake (capacity, Host, Origin, bearer and URL token); ``handshake`` adds its
    own (returns why the request is refused, or None); ``serve`` runs the connection."""

    serve: Callable[[DetectorServer, Connection], Awaitable[None]]
    handshake: Callable[[DetectorServer, Request], str | None] | None = None
