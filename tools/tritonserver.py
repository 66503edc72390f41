"""A real tritonserver on loopback, for the Triton engine's tests and benchmark.

Uses the tritonserver that nvidia-pytriton (PyPI) bundles (2.51 in pytriton 0.7.0). That bundle
has the Python backend only, no onnxruntime backend, so the repository it serves is written with
``python -m engines.triton_repo --backend python`` (ONNX Runtime inside Triton's Python stub).
The stub links Debian's libpython3.11 (``apt-get install libpython3.11``); numpy and onnxruntime
come from this interpreter's site-packages through PYTHONPATH (see engines/triton_model.py).

gRPC only, on 127.0.0.1 and a free port; HTTP and metrics off. Every wait is bounded and the
whole process group (server and stubs) is killed on close.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from tools.haproxy import LOOPBACK, free_port

STUB_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


class TritonUnavailable(RuntimeError):
    """tritonserver cannot run here (not installed, or a system library is missing): a skip."""


class TritonStartError(RuntimeError):
    """The server ran but did not come up; ``model_failed`` when it was the model that failed to load."""

    def __init__(self, message: str, model_failed: bool) -> None:
        super().__init__(message)
        self.model_failed = model_failed


def bundled_server() -> Path:
    """The tritonserver inside nvidia-pytriton's wheel; TritonUnavailable with the reason if absent."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise TritonUnavailable("nvidia-pytriton is not installed (it bundles tritonserver): "
                                "pip install --no-deps nvidia-pytriton==0.7.0")
    root = Path(spec.origin).parent / "tritonserver"
    binary, stub = root / "bin" / "tritonserver", root / "python_backend_stubs" / STUB_PYTHON / "triton_python_backend_stub"
    for path in (binary, stub, root / "backends" / "python" / "libtriton_python.so"):
        if not path.is_file():
            raise TritonUnavailable(f"{path} is missing from the nvidia-pytriton install")
    missing = _missing_libraries(stub)
    if missing:
        raise TritonUnavailable(f"Triton's Python {STUB_PYTHON} stub needs {', '.join(missing)}: "
                                f"apt-get install libpython{STUB_PYTHON}")
    return binary


def _missing_libraries(binary: Path) -> list[str]:
    try:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return [f"ldd ({e})"]
    return [line.split()[0] for line in out.splitlines() if "not found" in line]


def _backend_dir(root: Path, into: Path) -> Path:
    """The layout tritonserver expects (BACKENDS/python/{libtriton_python.so, stub, utils}),
    linked from the wheel, whose stubs sit in one folder per Python version."""
    python = into / "python"
    python.mkdir(parents=True)
    for src in (root / "backends" / "python" / "libtriton_python.so",
                root / "backends" / "python" / "triton_python_backend_utils.py",
                root / "python_backend_stubs" / STUB_PYTHON / "triton_python_backend_stub"):
        (python / src.name).symlink_to(src)
    return into


class TritonServer:
    """tritonserver serving ``repository``; ``url`` is its gRPC address once started."""

    def __init__(self, repository: Path, start_timeout_s: float = 90.0) -> None:
        self.binary = bundled_server()
        self.repository = repository
        self.dir = Path(tempfile.mkdtemp(prefix="rtd-triton-"))
        self.log_path = self.dir / "tritonserver.log"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.start_timeout_s = start_timeout_s

    @property
    def url(self) -> str:
        return f"grpc://{LOOPBACK}:{self.port}"

    def start(self, models: list[str]) -> TritonServer:
        """Start and wait (bounded) until every model in ``models`` is ready."""
        backends = _backend_dir(self.binary.parents[1], self.dir / "backends")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (sysconfig.get_paths()["purelib"], os.environ.get("PYTHONPATH")) if p)}
        cmd = [str(self.binary), f"--model-repository={self.repository}", f"--backend-directory={backends}",
               "--allow-http=false", "--allow-metrics=false", "--allow-gpu-metrics=false",
               f"--grpc-address={LOOPBACK}", f"--grpc-port={self.port}", "--exit-timeout-secs=5",
               "--pinned-memory-pool-byte-size=0", "--log-verbose=0"]
        with open(self.log_path, "wb") as log:
            # Own process group: the Python stubs are the server's children and go with it.
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_ready(models)
        except BaseException:
            self.close(remove=False)  # stubs a half-started server left behind; the log stays
            raise
        return self

    def _wait_ready(self, models: list[str]) -> None:
        import tritonclient.grpc as grpcclient

        deadline = time.monotonic() + self.start_timeout_s
        client = grpcclient.InferenceServerClient(url=f"{LOOPBACK}:{self.port}")
        try:
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    self._failed(f"tritonserver exited with status {self.proc and self.proc.returncode}")
                try:
                    if all(client.is_model_ready(m, client_timeout=2) for m in models):
                        return
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
                time.sleep(0.2)
        finally:
            client.close()
        self._failed(f"tritonserver not ready after {self.start_timeout_s:g} s")

    def _failed(self, what: str) -> None:
        tail = self.log_tail()
        model_failed = "failed to load" in tail
        raise TritonStartError(f"{what}; log {self.log_path}:\n{tail}", model_failed)

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        # Triton's start-up tables are wide and empty of causes; keep the messages.
        return "\n".join([ln for ln in text if not ln.startswith(("+-", "|  "))][-lines:])

    def kill(self) -> None:
        """SIGKILL the server and its stubs at once (a crashed inference tier)."""
        self._signal_group(signal.SIGKILL)

    def close(self, remove: bool = True) -> None:
        self._signal_group(signal.SIGTERM)
        if remove:
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)

    def _signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # Stubs left behind by a killed server (same group) go too.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
