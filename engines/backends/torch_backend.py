"""Eager torch engine on CPU or CUDA (the reference the compiled engines are checked against)."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from engines.checkpoint import load_detector
from engines.engine import Availability, Engine, EngineRequest
from engines.errors import EngineError, MissingExtraError


class TorchEngine(Engine):
    name = "torch"
    auto_rank = 3
    uses_threads = True

    @classmethod
    def from_request(cls, request: EngineRequest) -> Engine:
        return cls(request.folder, device=request.device or "cpu", threads=request.threads,
                   max_batch=request.max_batch)

    @classmethod
    def availability(cls, folder: Path | None) -> Availability:
        if importlib.util.find_spec("torch") is None:
            return Availability(False, "torch is not installed: pip install 'realtime-detect[torch]' -c constraints.txt")
        return Availability(True, "torch eager on the CPU")

    def __init__(self, folder: Path, device: str = "cpu", threads: int | None = None, max_batch: int = 64) -> None:
        try:
            import torch
        except ImportError:
            raise MissingExtraError("torch", "torch", "the torch engine") from None
        detector, config = load_detector(folder)
        super().__init__(config, max_batch)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineError(f"device {device!r} requested but torch sees no CUDA GPU")
        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.device = device
        self.model = detector.to(device)
        self._version = torch.__version__

    def _logits(self, windows: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(windows).to(self.device, non_blocking=True)
            return self.model(x).float().cpu().numpy()

    def info(self) -> dict[str, Any]:
        return {**super().info(), "precision": "fp32", "torch": self._version}
