"""Alert webhooks against a real HTTP server on 127.0.0.1 (http.server in a thread): signed
bodies, alert onsets only, retries with backoff, the bounded queue, failures counted and logged
once per interval; and a Twilio call whose alert reaches the hook. Every wait is bounded."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from realtime.cli import main
from realtime.events import ScoreEvent, SummaryEvent, parse_event
from realtime.session import LiveDetector
from realtime.webhook import SIGNATURE_HEADER, WebhookOptions, WebhookSink
from tests.test_session import FakeEngine
from tests.test_telephony import DET, OPTS, T, call_audio, twilio_call
from tests.telephony_clients import twilio_messages

SECRET = "hook-secret"


class Receiver:
    """An HTTP endpoint that records each POST and answers with the next scripted status."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses = list(statuses or [])
        self.got = threading.Event()  # a request arrived
        self.release = threading.Event()  # handlers answer once set
        self.release.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                receiver.got.set()
                receiver.release.wait(T)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:  # quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/deepfake"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(T)


def score(stream: str, seq: int, alert: bool, connection: int | None = 1) -> ScoreEvent:
    return ScoreEvent(stream=stream, seq=seq, start_s=0.5 * seq, end_s=4 + 0.5 * seq, spoof_probability=0.9,
                      label="spoof", alert=alert, latency_ms=3.0, model="m", connection=connection, track="caller")


def settle(s: WebhookSink, n: int) -> None:
    """Wait (bounded) until ``n`` events are delivered or given up: closing would cut retries short."""
    deadline = time.monotonic() + T
    while s.stats().sent + s.stats().failed < n and time.monotonic() < deadline:
        time.sleep(0.01)


@contextmanager
def sink(url: str, **kw) -> Iterator[WebhookSink]:
    s = WebhookSink(WebhookOptions(url, **{"backoff_s": 0.01, **kw}))
    try:
        yield s
    finally:
        s.close(T)


def test_alert_onsets_and_summaries_are_posted_signed() -> None:
    summary = SummaryEvent(stream="a", windows=6, spoof_probability=0.9, label="spoof", connection=1)
    with Receiver() as rx:
        with sink(rx.url, secret=SECRET, summaries=True) as s:
            for ev in (score("a", 0, False), score("a", 1, True), score("a", 2, True), score("a", 3, False),
                       score("a", 4, True), score("b", 0, True), summary):
                s(ev)
        assert s.stats().sent == 4 and s.stats().failed == 0
    bodies = [parse_event(body) for _, body in rx.requests]
    assert [(e.type, e.stream, getattr(e, "seq", None)) for e in bodies] == [
        ("score", "a", 1), ("score", "a", 4), ("score", "b", 0), ("summary", "a", None)]
    for headers, body in rx.requests:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers[SIGNATURE_HEADER], expected)
        assert headers["Content-Type"] == "application/json"
    assert [h["X-Realtime-Detect-Event"] for h, _ in rx.requests] == ["alert", "alert", "alert", "summary"]
    assert len({h["X-Realtime-Detect-Delivery"] for h, _ in rx.requests}) == 4
    assert json.loads(rx.requests[0][1]) == score("a", 1, True).to_dict()  # the event exactly as logged


def test_failures_are_retried_with_the_same_delivery_id() -> None:
    with Receiver(statuses=[500, 503, 429, 200]) as rx:
        with sink(rx.url, attempts=5) as s:
            s(score("a", 0, True))
            settle(s, 1)
    assert s.stats().sent == 1 and s.stats().retried == 3 and s.stats().failed == 0
    assert len(rx.requests) == 4 and len({h["X-Realtime-Detect-Delivery"] for h, _ in rx.requests}) == 1
    assert SIGNATURE_HEADER not in rx.requests[0][0]  # no secret: unsigned


def test_a_client_error_is_not_retried_and_failures_are_logged_once_per_interval(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="realtime.webhook"):
        with Receiver(statuses=[400, 404, 410]) as rx:
            with sink(rx.url, report_interval_s=3600) as s:
                for k in range(3):
                    s(score(f"s{k}", 0, True))
                settle(s, 3)
        assert s.stats().failed == 3 and s.stats().retried == 0 and len(rx.requests) == 3
    lines = [r.getMessage() for r in caplog.records if r.name == "realtime.webhook"]
    # The first failure at once, the other two when the sink closes: never one line per failure.
    assert len(lines) == 2, lines
    assert "1 event(s) not delivered" in lines[0] and "HTTP 400" in lines[0]
    assert "2 event(s) not delivered" in lines[1] and "HTTP 410" in lines[1]
    assert "/hooks" not in lines[0] and not [r for r in caplog.records if r.exc_info]


def test_unreachable_hook_is_retried_then_counted() -> None:
    with Receiver() as rx:
        url = rx.url
    # The receiver is closed: connections are refused.
    with sink(url, attempts=3) as s:
        s(score("a", 0, True))
        settle(s, 1)
    assert s.stats().failed == 1 and s.stats().retried == 2 and s.stats().sent == 0


def test_queue_is_bounded_and_never_blocks_the_caller() -> None:
    with Receiver() as rx:
        rx.release.clear()  # the hook hangs
        with sink(rx.url, queue=2) as s:
            s(score("first", 0, True))
            assert rx.got.wait(T)  # the delivery thread is stuck in that POST; the queue is empty
            for k in range(4):
                s(score(f"s{k}", 0, True))  # returns at once: queued (2) or dropped (2)
            assert s.stats().dropped == 2
            rx.release.set()
        assert s.stats().sent == 3 and s.stats().dropped == 2


@pytest.mark.parametrize("argv, words", [
    (["--webhook", "ftp://example.com/x"], "http:// or https://"),
    (["--webhook-summaries"], "--webhook-summaries needs --webhook"),
    (["--input", "audiosocket", "--host", "0.0.0.0"], "AudioSocket carries no credentials"),
])
def test_cli_usage_errors(argv, words, capsys) -> None:
    args = argv if "--input" in argv else ["--input", "ws", *argv]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2 and words in capsys.readouterr().err


def test_help_teaches_the_new_options(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for words in ("'audiosocket'", "--twilio-auth-token", "--webhook URL", "--webhook-secret", "--webhook-summaries",
                  "/v1/twilio", "/v1/audiohook"):
        assert words in out


def test_a_twilio_calls_alert_reaches_the_hook_and_healthz_counts_it() -> None:
    from realtime.server import DetectorServer

    mu, _ = call_audio(6.0, 0)
    sid = "CA" + "c" * 32

    async def main_() -> None:
        with Receiver() as rx:
            hook = WebhookSink(WebhookOptions(rx.url, SECRET, summaries=True, backoff_s=0.01))
            det = LiveDetector(FakeEngine(prob=0.9), DET, sinks=[hook]).start()
            server = DetectorServer(det, OPTS, flush_s=2.0, drain_s=10.0)
            await server.start()
            try:
                assert await twilio_call(server, twilio_messages(sid, {"inbound": mu})) == ([], 1000)
                await asyncio.to_thread(hook.close, T)
                url = f"http://127.0.0.1:{server.port}/healthz"
                health = json.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=T).read()))
            finally:
                server.shutdown()
                async with asyncio.timeout(T):
                    await server.wait_closed()
        events = [parse_event(body) for _, body in rx.requests]
        assert [(e.type, e.stream, e.track) for e in events] == [("score", f"{sid}:caller", "caller"),
                                                                 ("summary", f"{sid}:caller", "caller")]
        assert events[0].alert and events[0].seq == 2  # the k-of-n rule (3 of 5) turns on at the third window
        assert health["webhook"] == {"sent": 2, "failed": 0, "retried": 0, "dropped": 0}

    asyncio.run(main_())
