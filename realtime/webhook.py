"""Alert webhooks: ``--webhook URL`` POSTs each alert (and, with ``summaries``, each summary).

An alert is the alert rule turning on for a stream: the first score event with ``alert: true``
after one without (windows that keep it on are not re-sent; the summary gives the verdict).
The body is the event's JSON, exactly as in the event log, with these headers:

* ``X-Realtime-Detect-Signature: sha256=<hex>``: HMAC-SHA256 of the body with the shared
  secret (when one is set); compare it in constant time before trusting the body;
* ``X-Realtime-Detect-Event``: ``alert`` or ``summary``;
* ``X-Realtime-Detect-Delivery``: one id per event, the same on every retry (deduplicate).

Delivery never blocks scoring: the sink only queues (at most ``queue`` events; past that
new ones are dropped and counted), and one thread POSTs. A connection failure, a timeout,
HTTP 429 or 5xx is retried with exponential backoff (``backoff_s``, doubled each time, at most
30 s) up to ``attempts`` tries; another 4xx is not retried. Failures are counted
(:meth:`WebhookSink.stats`, ``/healthz``) and logged at most once per ``report_interval_s``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["WebhookOptions", "WebhookSink", "WebhookStats", "SIGNATURE_HEADER", "sign"]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Realtime-Detect-Signature"
MAX_BACKOFF_S = 30.0


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    url: str
    secret: str | None = None
    summaries: bool = False  # also POST each stream's summary
    queue: int = 1000  # events waiting for delivery; past this, new ones are dropped (counted)
    timeout_s: float = 5.0  # one POST
    attempts: int = 5  # tries per event (1: no retry)
    backoff_s: float = 0.5  # before the first retry; doubled each time
    report_interval_s: float = 10.0  # failures are logged at most this often

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--webhook {self.url[:100]!r}: not accepted; accepted: an http:// or https:// URL")
        if self.secret is not None and not self.secret:
            raise ValueError("--webhook-secret: empty; accepted: a shared secret (or none, for unsigned requests)")
        if self.queue < 1 or self.attempts < 1:
            raise ValueError("webhook queue and attempts must be at least 1")
        for name in ("timeout_s", "backoff_s", "report_interval_s"):
            if not 0 < getattr(self, name) < float("inf"):
                raise ValueError(f"webhook {name} must be a positive number of seconds")

    @property
    def where(self) -> str:
        """The URL without path, query or credentials: what logs may show."""
        p = urlsplit(self.url)
        return f"{p.scheme}://{p.hostname}" + (f":{p.port}" if p.port else "")


@dataclass(slots=True)
class WebhookStats:
    sent: int = 0
    failed: int = 0  # events given up on (after every try, or refused with a 4xx)
    retried: int = 0  # tries that failed and were tried again
    dropped: int = 0  # events not queued: the queue was full


class WebhookSink:
    """A sink (:data:`realtime.session.Sink`) that queues alerts and summaries for delivery."""

    def __init__(self, options: WebhookOptions) -> None:
        self.options = options
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(options.queue)
        self._alerting: set[tuple[str, int | None]] = set()  # (stream, connection) with the alert on
        self._stats = WebhookStats()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._unreported = 0
        self._last_error = ""
        self._last_report = -float("inf")
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self._thread.start()

    def __call__(self, event: Any) -> None:
        kind = None
        key = (getattr(event, "stream", None), getattr(event, "connection", None))
        if event.type == "score":
            if event.alert and key not in self._alerting:
                kind = "alert"
                self._alerting.add(key)
            elif not event.alert:
                self._alerting.discard(key)
        elif event.type == "summary":
            self._alerting.discard(key)
            if self.options.summaries:
                kind = "summary"
        if kind is None:
            return
        try:
            self._queue.put_nowait((kind, event.to_json().encode()))
        except queue.Full:
            with self._lock:
                self._stats.dropped += 1

    def stats(self) -> WebhookStats:
        with self._lock:
            s = self._stats
            return WebhookStats(s.sent, s.failed, s.retried, s.dropped)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (one try each, no more backoff), for at most ``timeout``."""
        self._closing.set()
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        self._report(force=True)

    # -- the delivery thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._deliver(*item)

    def _deliver(self, kind: str, body: bytes) -> None:
        o = self.options
        headers = {"Content-Type": "application/json", "User-Agent": "realtime-detect",
                   "X-Realtime-Detect-Event": kind, "X-Realtime-Detect-Delivery": str(uuid.uuid4())}
        if o.secret is not None:
            headers[SIGNATURE_HEADER] = sign(o.secret, body)
        delay = o.backoff_s
        for attempt in range(1, o.attempts + 1):
            error, retry = self._post(body, headers)
            if error is None:
                with self._lock:
                    self._stats.sent += 1
                return
            if not retry or attempt == o.attempts or self._closing.is_set():
                break
            with self._lock:
                self._stats.retried += 1
            if self._closing.wait(delay):  # closing: no more waiting
                break
            delay = min(2 * delay, MAX_BACKOFF_S)
        with self._lock:
            self._stats.failed += 1
            self._unreported += 1
            self._last_error = error
        self._report()

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[str | None, bool]:
        """(None, _) when delivered; else (why, whether trying again may help)."""
        request = urllib.request.Request(self.options.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.options.timeout_s) as response:
                response.read()
            return None, False
        except urllib.error.HTTPError as e:
            e.close()
            return f"HTTP {e.code}", e.code == 429 or e.code >= 500
        except (urllib.error.URLError, OSError) as e:  # refused, unreachable, timed out, reset
            reason = getattr(e, "reason", e)
            return f"{type(reason).__name__}: {reason}"[:200], True

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not self._unreported or (not force and now - self._last_report < self.options.report_interval_s):
                return
            log.warning("webhook %s: %d event(s) not delivered since the last report (last error: %s)",
                        self.options.where, self._unreported, self._last_error)
            self._unreported = 0
            self._last_report = now
