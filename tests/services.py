"""Real Redis, PostgreSQL and HAProxy processes for tests, on loopback, in their own folders.

Each binds 127.0.0.1 on a free port, keeps its data in a fresh temporary folder, can be killed
and started again on the same port and data (a sink restart), and is always torn down by the
fixture that made it. A missing binary is a skip with the reason, never a failure.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"


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


class RedisServer:
    """``redis-server`` with an append-only file synced on every write: an acknowledged XADD
    survives SIGKILL."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.skip("redis-server not installed (apt-get install redis-server; .ci/run does)")
        self.dir = Path(tempfile.mkdtemp(prefix="rtd-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--bind", LOOPBACK, "--port", str(self.port), "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
             "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.port, self.proc, "redis-server")

    def kill(self) -> None:
        """SIGKILL: no shutdown save; only what the append-only file holds survives."""
        stop_process(self.proc, signal.SIGKILL)

    def close(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or ([shutil.which(name)] if shutil.which(name) else [])
    return found[-1] if found else None


class PostgresServer:
    """A PostgreSQL cluster of its own (initdb), run as a non-root user when we are root
    (PostgreSQL refuses to run as root)."""

    def __init__(self) -> None:
        self.initdb, self.postgres = _pg_bin("initdb"), _pg_bin("postgres")
        if self.initdb is None or self.postgres is None:
            pytest.skip("PostgreSQL server not installed (apt-get install postgresql; .ci/run does)")
        self.user: str | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    pwd.getpwnam(name)
                    self.user = name
                    break
                except KeyError:
                    continue
            if self.user is None:
                pytest.skip("running as root without a 'postgres' or 'nobody' user: PostgreSQL cannot start")
        self.dir = Path(tempfile.mkdtemp(prefix="rtd-pg-"))  # /tmp/rtd-pg-*: reachable by that user
        self.data = self.dir / "data"
        if self.user is not None:
            os.chown(self.dir, pwd.getpwnam(self.user).pw_uid, -1)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        out = subprocess.run([self.initdb, "-D", str(self.data), "-U", "detector", "--auth=trust", "-E", "UTF8",
                              "--no-sync"], capture_output=True, text=True, timeout=120, **self._as_user())
        if out.returncode != 0:
            shutil.rmtree(self.dir, ignore_errors=True)
            pytest.skip(f"initdb failed: {out.stderr.strip().splitlines()[-1:]}")
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql://detector@{LOOPBACK}:{self.port}/postgres"

    def _as_user(self) -> dict:
        """Popen arguments that run the server as ``self.user`` (directly, so that our signals
        reach the postmaster itself, not a ``su`` in between)."""
        if self.user is None:
            return {"cwd": self.dir}
        pw = pwd.getpwnam(self.user)
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "cwd": self.dir}

    def start(self) -> None:
        # No Unix socket (only loopback TCP); fsync on: a commit must survive the kill below.
        self.proc = subprocess.Popen(
            [self.postgres, "-D", str(self.data), "-h", LOOPBACK, "-p", str(self.port), "-k", "",
             "-c", "fsync=on", "-c", "logging_collector=off"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **self._as_user())
        deadline = time.monotonic() + 60
        import psycopg

        while True:  # listening is not enough: the server refuses logins until recovery is done
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not start on {LOOPBACK}:{self.port}") from None
                time.sleep(0.1)

    def crash(self) -> None:
        """SIGQUIT: immediate shutdown, no checkpoint; committed transactions survive in the WAL."""
        stop_process(self.proc, signal.SIGQUIT)

    def close(self) -> None:
        stop_process(self.proc, signal.SIGINT)  # fast shutdown
        shutil.rmtree(self.dir, ignore_errors=True)


DEPLOY_HAPROXY = Path(__file__).resolve().parents[1] / "deploy" / "haproxy" / "haproxy.cfg"


class HAProxy:
    """``haproxy`` with deploy/haproxy/haproxy.cfg and a fixed list of servers on loopback, plus
    an admin socket (a Unix socket in its folder) to read the servers' check states."""

    def __init__(self, servers: dict[str, int]) -> None:
        self.binary = shutil.which("haproxy")
        if self.binary is None:
            pytest.skip("haproxy not installed (apt-get install haproxy; .ci/run does)")
        self.dir = Path(tempfile.mkdtemp(prefix="rtd-haproxy-"))
        self.socket = self.dir / "admin.sock"
        lines = [f"    server {name} {LOOPBACK}:{port}" for name, port in servers.items()]
        (self.dir / "servers.cfg").write_text("\n".join([
            "global", f"    stats socket {self.socket} mode 600 level admin", "",
            "backend detectors from detector_backend", *lines, ""]))
        self.port = free_port()
        self.log = self.dir / "haproxy.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [self.binary, "-db", "-f", str(DEPLOY_HAPROXY), "-f", str(self.dir / "servers.cfg")],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "RTD_LISTEN": f"{LOOPBACK}:{self.port}"})
        try:
            wait_listening(self.port, self.proc, "haproxy")
        except RuntimeError as e:
            self.close()
            raise RuntimeError(f"{e}: {self.log.read_text()[-2000:]}") from None

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

    def close(self) -> None:
        stop_process(self.proc, signal.SIGUSR1)  # soft stop
        log = self.log.read_text(errors="replace") if self.log.exists() else ""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.log_text = log
