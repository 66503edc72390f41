"""The Engine contract: windows float32 [B, N] -> spoof probability float32 [B].

An engine states what a caller needs to feed it: ``sample_rate`` (Hz), ``window_samples`` (N)
and ``preferred_batch`` (the most windows per run it is fastest at). ``logits``/``score`` take
any batch from anyone (validated, run in pieces of ``preferred_batch``); ``batch_logits`` is the
trusted hot path of a caller that already sized and checked its batch (realtime's batcher).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from engines.checkpoint import ModelConfig
from engines.errors import EngineError

if TYPE_CHECKING:  # pragma: no cover
    from engines.backends.triton_backend import TritonOptions


@dataclass(frozen=True)
class EngineRequest:
    """What every backend is built from (:meth:`Engine.from_request`); each reads what it uses."""

    folder: Path  # the checkpoint folder
    config: ModelConfig
    threads: int = 1  # CPU backends: intra-op threads
    max_batch: int = 64
    device: str | None = None  # None: the backend's own default
    triton: TritonOptions | None = None  # the triton backend: where the server is
    split: bool = False  # also load the network alone (backends with supports_split)

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise EngineError(f"threads must be at least 1, got {self.threads}")
        if self.max_batch < 1:
            raise EngineError(f"max_batch must be at least 1, got {self.max_batch}")


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str  # what it runs on, or why it cannot run here


class Engine(ABC):
    """A compiled or eager model behind one ``score`` call.

    Subclasses implement ``_logits`` for one run of at most ``preferred_batch`` windows
    (``max_batch`` unless a backend gains nothing from larger runs, and then they lower it); this
    class validates input, cuts large batches of external callers into runs and applies the
    checkpoint's calibration.
    """

    name: str = "engine"
    device: str = "cpu"
    #: How ``engines.load`` came to this backend, in words (a server says it at start).
    choice: str = ""
    #: Order in which ``--engine auto`` tries the backends (lower first); None: opt-in only.
    auto_rank: ClassVar[int | None] = None
    #: Whether ``EngineRequest.threads`` means anything to this backend (others refuse it).
    uses_threads: ClassVar[bool] = False
    #: GPU backends: ``load`` says why one cannot run here before trying to build it.
    needs_gpu: ClassVar[bool] = False
    #: Whether it can run the network alone on streamed features (``feature_logits``).
    supports_split: ClassVar[bool] = False

    @classmethod
    def has_split_view(cls, config: ModelConfig) -> bool:
        """Whether the checkpoint records the network graph this backend's split path runs."""
        return False

    @property
    def split(self) -> bool:
        """Whether this engine was loaded with ``split`` (``feature_logits`` runs)."""
        return False

    @classmethod
    @abstractmethod
    def from_request(cls, request: EngineRequest) -> Engine:
        """The one constructor the registry calls (``engines.load``)."""

    @classmethod
    @abstractmethod
    def availability(cls, folder: Path | None) -> Availability:
        """Whether this backend can run here (and run the checkpoint in ``folder``, when given).

        Must not import heavy runtimes beyond what the answer needs."""

    def __init__(self, config: ModelConfig, max_batch: int) -> None:
        self.config = config
        self.max_batch = max_batch
        self.preferred_batch = max_batch
        self.sample_rate = config.sample_rate
        self.window_samples = config.window_samples
        self._scale = float(config.calibration["scale"])
        self._bias = float(config.calibration["bias"])

    @property
    def model_id(self) -> str:
        return self.config.model_id

    @property
    def threshold(self) -> float:
        return self.config.threshold

    def logits(self, windows: np.ndarray) -> np.ndarray:
        """Calibrated spoof logits float32 [B] (higher = more likely spoofed)."""
        return self._calibrated(self._check(windows), self._logits)

    def batch_logits(self, windows: np.ndarray) -> np.ndarray:
        """:meth:`logits` of one run, for a trusted caller: ``windows`` is already C-contiguous
        float32 [B, window_samples] of finite samples (realtime's windowing rejects non-finite
        audio at input), with 1 <= B <= ``preferred_batch``. Only the shape is checked: no copy,
        no full-batch finiteness pass, no re-splitting."""
        if windows.ndim != 2 or windows.shape[1] != self.window_samples or not 1 <= len(windows) <= self.preferred_batch:
            raise EngineError(f"batch_logits takes [1..{self.preferred_batch}, {self.window_samples}], "
                              f"got {list(windows.shape)}")
        return self._calibrate(self._logits(windows))

    def _calibrated(self, x: np.ndarray, run: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``run`` over ``x`` in runs of at most ``preferred_batch``, then the checkpoint's calibration."""
        if len(x) == 0:
            return np.zeros(0, dtype=np.float32)
        step = self.preferred_batch
        parts = [run(x[i : i + step]) for i in range(0, len(x), step)]
        return self._calibrate(parts[0] if len(parts) == 1 else np.concatenate(parts))

    def _calibrate(self, raw: np.ndarray) -> np.ndarray:
        return (raw * self._scale + self._bias).astype(np.float32, copy=False)

    def score(self, windows: np.ndarray) -> np.ndarray:
        """Spoof probability float32 [B] in [0, 1]."""
        z = self.logits(windows)
        return (1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))).astype(np.float32)

    def warm_up(self, concurrency: int = 1, network_only: bool = False) -> None:
        """Run ``concurrency`` simultaneous calls of ``preferred_batch`` silent windows.

        Lazy initialisation happens here instead of on the first real window, and allocators that
        keep their high-water mark (ONNX Runtime's arena) reach it at start-up, so a server's
        memory does not climb hours later when the first full batch arrives. ``network_only``
        (loaded with split): only the network graph, for a caller that never runs whole windows.
        """
        if network_only and not self.split:
            raise EngineError(f"engine {self.name} was loaded without split=True: it has no network graph")
        x = np.zeros((self.preferred_batch, self.window_samples), dtype=np.float32)
        if concurrency <= 1:
            self._warm_once(x, network_only)
            return
        with ThreadPoolExecutor(concurrency - 1, thread_name_prefix="warm-up") as pool:
            others = [pool.submit(self._warm_once, x, network_only) for _ in range(concurrency - 1)]
            self._warm_once(x, network_only)
            for f in others:
                f.result()

    def _warm_once(self, windows: np.ndarray, network_only: bool = False) -> None:
        """One warm-up call; engines with more than one graph run each (or the network alone)."""
        self.score(windows)

    def info(self) -> dict[str, Any]:
        return {"engine": self.name, "device": self.device, "model": self.model_id,
                "architecture": self.config.architecture, "max_batch": self.max_batch,
                "preferred_batch": self.preferred_batch, "sample_rate": self.sample_rate}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device resources; engines holding none need not override."""

    @abstractmethod
    def _logits(self, windows: np.ndarray) -> np.ndarray: ...

    def _check(self, windows: np.ndarray) -> np.ndarray:
        return check_windows(windows, self.window_samples)


def check_windows(windows: np.ndarray, window_samples: int) -> np.ndarray:
    """``windows`` as contiguous float32 [B, window_samples]; EngineError if not that shape or not finite."""
    if not isinstance(windows, np.ndarray):
        raise EngineError(f"windows must be a numpy array, got {type(windows).__name__}")
    if windows.ndim != 2 or windows.shape[1] != window_samples:
        raise EngineError(f"windows must have shape [B, {window_samples}], got {list(windows.shape)}")
    x = np.ascontiguousarray(windows, dtype=np.float32)
    if not np.isfinite(x).all():
        bad = int(np.argwhere(~np.isfinite(x))[0][0])
        raise EngineError(f"window {bad} contains NaN or Inf samples; audio must be finite")
    return x
