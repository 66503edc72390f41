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
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tools.haproxy import DEPLOY_HAPROXY, LOOPBACK, free_port, stop_process, wait_listening
from tools.haproxy import HAProxy as _HAProxy

__all__ = ["RedisServer", "PostgresServer", "HAProxy", "DEPLOY_HAPROXY", "LOOPBACK", "free_port"]


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



def HAProxy(servers: dict[str, int]) -> _HAProxy:  # noqa: N802 (a class for the caller)
    """tools.haproxy.HAProxy, or a skip with the reason where haproxy is not installed."""
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy not installed (apt-get install haproxy; .ci/run does)")
    return _HAProxy(servers)
