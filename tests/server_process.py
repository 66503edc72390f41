"""The CLI's WebSocket server in a subprocess, for tests that kill it, signal it or measure it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class ServerProcess:
    """``realtime-detect --input ws --port 0 ARGS`` with its stderr drained into :attr:`log`."""

    def __init__(self, checkpoint: Path, *args: str, stdout: int | None = subprocess.DEVNULL,
                 timeout: float = 60.0, max_open_files: int | None = None, cpus: set[int] | None = None) -> None:
        # --max-delay-ms: a busy machine is slow; tests that count windows must not see them shed.
        cmd = [sys.executable, "-m", "realtime.cli", "--input", "ws", "--port", "0", "--quiet",
               "--model", str(checkpoint), "--engine", "onnx", "--max-delay-ms", "600000", *args]

        def limit() -> None:  # in the child, before exec: what `ulimit -n` and `taskset` do
            import os
            import resource

            if max_open_files:
                resource.setrlimit(resource.RLIMIT_NOFILE, (max_open_files, max_open_files))
            if cpus:
                os.sched_setaffinity(0, cpus)

        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=stdout, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=limit if max_open_files or cpus else None)
        self.log: list[str] = []
        self._port: list[int] = []
        ready = threading.Event()

        def drain() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.log.append(line.rstrip("\n"))
                m = re.search(r"listening on ws://[^ ]*:(\d+)/v1/stream", line)
                if m:
                    self._port.append(int(m.group(1)))
                    ready.set()
            ready.set()

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()
        if not ready.wait(timeout) or not self._port:
            self.kill()
            raise RuntimeError("server did not start:\n" + "\n".join(self.log[-20:]))
        self.port = self._port[0]
        self.url = f"ws://127.0.0.1:{self.port}/v1/stream"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_mb(self) -> float:
        """Resident set size from /proc (MB)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def health(self, timeout: float = 5.0) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=timeout) as r:
            assert r.status == 200
            return json.loads(r.read())

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        self.proc.terminate()
        rc = self.proc.wait(timeout)
        self._drain.join(5)
        return rc

    def kill(self) -> None:
        """SIGKILL (nothing runs in the server after this)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._drain.join(5)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


def connect_when_listening(port: int, timeout: float = 60.0):  # -> websockets.sync.client.ClientConnection
    """A sync WebSocket client to ``/v1/stream``, retried until a server that is still starting listens."""
    from websockets.sync.client import connect

    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect(f"ws://127.0.0.1:{port}/v1/stream")
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
