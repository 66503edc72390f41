"""Triton engine: each micro-batch is one gRPC inference call to a shared Triton server.

Many detector front ends (each holding its streams' state) can share one pool of GPUs this way;
Triton's dynamic batcher merges their calls. The server runs the checkpoint's ONNX graph (front
end included, written by ``python -m engines.triton_repo``) and returns raw logits; calibration
and thresholds stay here, read from the same local checkpoint, which must be the one the server
serves (checked against the sha256 the repository records).

Every call has a deadline; any failure (server down, timeout, model unloaded) raises EngineError,
which the micro-batcher reports on the windows of that batch while the detector stays up.
"""
from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.checkpoint import ModelConfig
from engines.engine import Availability, Engine, EngineRequest
from engines.errors import EngineError, MissingExtraError

INPUT, OUTPUT = "waveform", "logit"
SHA_PARAMETER = "realtime_detect_onnx_sha256"  # written by engines.triton_repo
_URL = re.compile(r"^(?:grpc://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class TritonOptions:
    """Where the tier is and how long to wait for it; validated once, here."""

    url: str  # grpc://HOST:PORT (or HOST:PORT)
    model_name: str | None = None  # None: the checkpoint's architecture (engines.triton_repo's default)
    timeout_s: float = 2.0  # deadline of one inference call
    connect_timeout_s: float = 10.0  # deadline of the start-up checks (server live, model ready, config)

    def __post_init__(self) -> None:
        m = _URL.match(self.url or "")
        if m is None or not 0 < int(m.group("port")) <= 65535:
            raise EngineError(f"--triton-url {self.url!r}: expected grpc://HOST:PORT (Triton's gRPC port, 8001 by default)")
        if not 0 < self.timeout_s <= 600:
            raise EngineError(f"--triton-timeout {self.timeout_s}: must be between 0 and 600 seconds")
        if not 0 < self.connect_timeout_s <= 600:
            raise EngineError(f"connect timeout {self.connect_timeout_s}: must be between 0 and 600 seconds")

    @property
    def address(self) -> str:
        """HOST:PORT as tritonclient wants it."""
        return self.url.removeprefix("grpc://")


def _import_client() -> Any:
    try:
        import tritonclient.grpc as grpcclient
    except ImportError:
        raise MissingExtraError("tritonclient", "triton", "the Triton engine (--engine triton)") from None
    return grpcclient


class TritonEngine(Engine):
    name = "triton"

    @classmethod
    def from_request(cls, request: EngineRequest) -> Engine:
        if request.triton is None:
            raise EngineError("engine 'triton' needs --triton-url grpc://HOST:PORT")
        return cls(request.config, request.triton, max_batch=request.max_batch)

    @classmethod
    def availability(cls, folder: Path | None) -> Availability:
        if importlib.util.find_spec("tritonclient") is None:
            return Availability(False, "tritonclient is not installed: pip install 'realtime-detect[triton]'"
                                " -c constraints.txt")
        return Availability(True, "gRPC client of a Triton server (needs --triton-url; opt-in)")

    def __init__(self, config: ModelConfig, options: TritonOptions, max_batch: int = 64) -> None:
        super().__init__(config, max_batch)
        grpc = _import_client()
        from tritonclient.utils import InferenceServerException

        self._grpc, self._server_error = grpc, InferenceServerException
        self.options = options
        self.model_name = options.model_name or config.architecture
        self.device = f"triton {options.address}"
        # One client for all threads: tritonclient's gRPC infer is thread-safe (only its streaming
        # calls are not), so the batcher's --parallel calls share one channel.
        self._client = grpc.InferenceServerClient(url=options.address)
        try:
            server_max = self._check_server()
        except EngineError:
            self._client.close()
            raise
        if server_max > 0:
            self.preferred_batch = min(max_batch, server_max)
        self._output = grpc.InferRequestedOutput(OUTPUT)

    def _where(self) -> str:
        return f"Triton model {self.model_name!r} at {self.options.url}"

    def _check_server(self) -> int:
        """The server is live, serves this model and the same ONNX graph; its max_batch_size."""
        t = self.options.connect_timeout_s
        try:
            if not self._client.is_server_live(client_timeout=t):
                raise EngineError(f"Triton server at {self.options.url} is not live")
            if not self._client.is_model_ready(self.model_name, client_timeout=t):
                raise EngineError(f"{self._where()} is not loaded or not ready; write a repository with"
                                  " python -m engines.triton_repo and serve it, or pass --triton-model NAME")
            config = self._client.get_model_config(self.model_name, as_json=True, client_timeout=t)["config"]
        except self._server_error as e:
            raise EngineError(f"{self._where()}: {_reason(e)}") from None
        served = config.get("parameters", {}).get(SHA_PARAMETER, {}).get("string_value")
        if served != self.config.onnx_sha256:
            have = f"ONNX sha256 {served[:12]}…" if served else f"no {SHA_PARAMETER} parameter"
            raise EngineError(f"{self._where()} serves {have}, but the checkpoint's model.onnx has "
                              f"{str(self.config.onnx_sha256)[:12]}…: rewrite the repository with"
                              " python -m engines.triton_repo for this checkpoint")
        dims = [int(d) for d in config.get("input", [{}])[0].get("dims", [])]
        if dims != [self.window_samples]:
            raise EngineError(f"{self._where()} takes input dims {dims}, the checkpoint's windows are [{self.window_samples}]")
        return int(config.get("max_batch_size", 0))

    def _logits(self, windows: np.ndarray) -> np.ndarray:
        inp = self._grpc.InferInput(INPUT, list(windows.shape), "FP32")
        inp.set_data_from_numpy(windows)
        try:
            result = self._client.infer(self.model_name, [inp], outputs=[self._output],
                                        client_timeout=self.options.timeout_s)
            out = result.as_numpy(OUTPUT)
        except self._server_error as e:
            raise EngineError(f"{self._where()}: {_reason(e)}") from None
        if out is None or out.size != len(windows):
            got = None if out is None else list(out.shape)
            raise EngineError(f"{self._where()} returned logits of shape {got} for {len(windows)} windows")
        return out.reshape(-1).astype(np.float32, copy=False)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "triton_url": self.options.url, "triton_model": self.model_name,
                "timeout_s": self.options.timeout_s}

    def close(self) -> None:
        self._client.close()


def _reason(e: Exception) -> str:
    """tritonclient's message, on one line (gRPC's can span several)."""
    text = " ".join(str(getattr(e, "message", lambda: None)() or e).split())
    return text if len(text) <= 300 else text[:300] + "…"
