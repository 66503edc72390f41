"""HAProxy in front of detector servers on loopback, for the failover test and the load test.

Runs ``haproxy`` with deploy/haproxy/haproxy.cfg (the deployed policy) and a generated file
listing the servers, plus an admin socket (a Unix socket in its own folder) to read the
servers' check states. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"
DEPLOY_HAPROXY = Path(__file__).resolve().parents[1] / "deploy" / "haproxy" / "haproxy.cfg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before listening on {port}")
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} not listening on {LOOPBACK}:{port} after {timeout:g} s")


def stop_process(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class HAProxy:
    """``haproxy`` balancing ``servers`` (name -> loopback port); raises FileNotFoundError
    when haproxy is not installed."""

    def __init__(self, servers: dict[str, int]) -> None:
        binary = shutil.which("haproxy")
        if binary is None:
            raise FileNotFoundError("haproxy not installed (apt-get install haproxy)")
        self.dir = Path(tempfile.mkdtemp(prefix="rtd-haproxy-"))
        self.socket = self.dir / "admin.sock"
        lines = [f"    server {name} {LOOPBACK}:{port}" for name, port in servers.items()]
        (self.dir / "servers.cfg").write_text("\n".join([
            "global", f"    stats socket {self.socket} mode 600 level admin", "",
            "backend detectors from detector_backend", *lines, ""]))
        self.port = free_port()
        self.log = self.dir / "haproxy.log"
        self.log_text = ""
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [binary, "-db", "-f", str(DEPLOY_HAPROXY), "-f", str(self.dir / "servers.cfg")],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "RTD_LISTEN": f"{LOOPBACK}:{self.port}"})
        try:
            wait_listening(self.port, self.proc, "haproxy")
        except RuntimeError as e:
            self.close()
            raise RuntimeError(f"{e}: {self.log_text[-2000:]}") from None

    @property
    def url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}/v1/stream"

    def server_states(self) -> dict[str, str]:
        """Server name -> check status ("UP", "DOWN", "UP 1/2", ...) from ``show stat``."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.socket))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {r["svname"]: r["status"] for r in rows
                if r.get("pxname") == "detectors" and r["svname"] not in ("BACKEND", "FRONTEND")}

    def wait_all_up(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(s == "UP" for s in self.server_states().values()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"haproxy: servers not UP after {timeout:g} s: {self.server_states()}")
            time.sleep(0.05)

    def close(self) -> None:
        stop_process(self.proc, signal.SIGUSR1)  # soft stop
        if self.log.exists():
            self.log_text = self.log.read_text(errors="replace")
        shutil.rmtree(self.dir, ignore_errors=True)
