"""CUDA torch engine: FP32 front end + FP16 network, fixed batch buckets captured in CUDA graphs.

Per call: numpy -> pinned host buffer -> one asynchronous copy to the bucket's static input ->
graph replay -> asynchronous copy of the logits back -> one stream synchronisation. A batch is
padded up to the smallest captured bucket, so every shape the graphs see was captured once.

FP16 tolerance (documented, asserted in tests/test_gpu.py against the CPU engine): spoof
probabilities within 0.02 absolute; the spectrogram itself stays float32 (log of small powers
loses too much in half precision), only the network after it runs in FP16.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from engines.checkpoint import load_detector
from engines.engine import Availability, Engine, EngineRequest
from engines.errors import EngineError, MissingExtraError

FP16_PROB_TOLERANCE = 0.02
DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def cuda_availability() -> Availability:
    """Whether torch sees a CUDA GPU (imports torch only when it is installed)."""
    if importlib.util.find_spec("torch") is None:
        return Availability(False, "torch is not installed")
    import torch

    if not torch.cuda.is_available():
        return Availability(False, f"torch {torch.__version__} sees no CUDA GPU")
    return Availability(True, f"torch CUDA on {torch.cuda.get_device_name(0)}")


class CudaGraphEngine(Engine):
    name = "cuda"
    auto_rank = 1
    needs_gpu = True

    @classmethod
    def from_request(cls, request: EngineRequest) -> Engine:
        return cls(request.folder, device=request.device or "cuda", max_batch=request.max_batch)

    @classmethod
    def availability(cls, folder: Path | None) -> Availability:
        return cuda_availability()

    def __init__(self, folder: Path, device: str = "cuda", max_batch: int = 1024, fp16: bool = True,
                 buckets: tuple[int, ...] = DEFAULT_BUCKETS) -> None:
        try:
            import torch
        except ImportError:
            raise MissingExtraError("torch", "torch", "the CUDA engine") from None
        if not torch.cuda.is_available():
            raise EngineError(f"the CUDA engine needs a CUDA GPU; torch {torch.__version__} sees none")
        from engines.models import MixedPrecision  # torch is here: the models can load

        detector, config = load_detector(folder)
        super().__init__(config, max_batch)
        self._torch = torch
        self.device = device
        self.dev = torch.device(device)
        self.fp16 = fp16
        model = MixedPrecision(detector).eval() if fp16 else detector.float().eval()
        self.model = model.to(self.dev)
        self.buckets = tuple(b for b in buckets if b <= max_batch) or (max_batch,)
        if self.buckets[-1] < max_batch:
            self.buckets += (max_batch,)
        self.stream = torch.cuda.Stream(self.dev)
        self._graphs: dict[int, Any] = {}
        self._inputs: dict[int, Any] = {}
        self._outputs: dict[int, Any] = {}
        self._pinned_in: dict[int, Any] = {}
        self._pinned_out: dict[int, Any] = {}
        for b in self.buckets:
            self._capture(b)
        self._gpu_name = torch.cuda.get_device_name(self.dev)

    def _capture(self, batch: int) -> None:
        torch = self._torch
        n = self.window_samples
        static_in = torch.zeros(batch, n, device=self.dev)
        with torch.inference_mode():
            # Warm-up on a side stream, as CUDA graph capture requires (allocator, cuDNN autotune).
            self.stream.wait_stream(torch.cuda.current_stream(self.dev))
            with torch.cuda.stream(self.stream):
                for _ in range(3):
                    self.model(static_in)
            torch.cuda.current_stream(self.dev).wait_stream(self.stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream):
                static_out = self.model(static_in)
        self._graphs[batch] = graph
        self._inputs[batch] = static_in
        self._outputs[batch] = static_out
        self._pinned_in[batch] = torch.zeros(batch, n, dtype=torch.float32).pin_memory()
        self._pinned_out[batch] = torch.zeros(batch, dtype=torch.float32).pin_memory()

    def bucket_for(self, batch: int) -> int:
        for b in self.buckets:
            if b >= batch:
                return b
        return self.buckets[-1]

    def _logits(self, windows: np.ndarray) -> np.ndarray:
        torch = self._torch
        count = len(windows)
        b = self.bucket_for(count)
        host_in, host_out = self._pinned_in[b], self._pinned_out[b]
        view = host_in.numpy()
        view[:count] = windows
        view[count:] = 0.0
        with torch.cuda.stream(self.stream):
            self._inputs[b].copy_(host_in, non_blocking=True)
            self._graphs[b].replay()
            host_out.copy_(self._outputs[b], non_blocking=True)
        self.stream.synchronize()
        return host_out.numpy()[:count].copy()

    def info(self) -> dict[str, Any]:
        return {**super().info(), "precision": "fp16 network, fp32 front end" if self.fp16 else "fp32",
                "gpu": self._gpu_name, "buckets": list(self.buckets), "torch": self._torch.__version__}

    def close(self) -> None:
        self._graphs.clear()
        self._inputs.clear()
        self._outputs.clear()
