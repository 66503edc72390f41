"""What turns a window into a probability: front end, model zoo, checkpoints, engine backends.

``engines.load(model, engine)`` is the entry point; it imports torch only for the torch/CUDA
engines, so the ONNX Runtime path runs on a machine without torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from engines.backends import BACKENDS, backend_class, register
from engines.checkpoint import ONNX_NAME, ModelConfig, read_config, resolve_dir
from engines.engine import Engine, EngineRequest
from engines.errors import CheckpointError, EngineError, MissingExtraError

if TYPE_CHECKING:  # pragma: no cover
    from engines.backends.triton_backend import TritonOptions

__all__ = ["Engine", "EngineError", "CheckpointError", "MissingExtraError", "load", "resolve_model",
           "available_engines", "SHIPPED_MODELS", "engine_choices", "register", "split_engines", "auto_order"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED_MODELS = ("specrnet", "resmax")


def resolve_model(model: str | Path) -> Path:
    """A shipped model name or a checkpoint path -> the checkpoint folder."""
    if str(model) in SHIPPED_MODELS:
        folder = WEIGHTS_DIR / str(model)
        if not (folder / "model.json").is_file():
            raise EngineError(f"model {model!r} has no shipped weights in this install ({folder});"
                              " pass --model PATH to a checkpoint folder")
        return folder
    path = Path(model)
    if not path.exists():
        raise EngineError(f"model {str(model)!r} is neither a shipped model {SHIPPED_MODELS} nor an existing path")
    return resolve_dir(path)


@dataclass(frozen=True)
class EngineStatus:
    name: str
    available: bool
    reason: str


def engine_choices() -> tuple[str, ...]:
    """``auto`` and every registered backend, for --engine."""
    return ("auto", *BACKENDS)


def split_engines() -> tuple[str, ...]:
    """Backends that can run the network alone on streamed features (``load(split=True)``)."""
    return tuple(n for n in BACKENDS if backend_class(n).supports_split)


def available_engines(model: str | Path | None = None) -> list[EngineStatus]:
    """What can run here and, for what cannot, why (for --list-engines and --engine auto).

    With ``model``, each backend also says whether it can run that checkpoint (onnx-int8 needs
    its int8 file, onnx and tensorrt its ONNX graph).
    """
    folder = resolve_model(model) if model is not None else None
    out = []
    for name in BACKENDS:
        a = backend_class(name).availability(folder)
        out.append(EngineStatus(name, a.available, a.reason))
    return out


def int8_by_default(config: ModelConfig) -> bool:
    """Whether ``--engine auto`` prefers the int8 network on the CPU for a checkpoint: only when its
    int8 record holds the generalization protocol's comparison (``python -m training.generalization
    --apply-int8``) and int8 stayed within its tolerance there; otherwise int8 is opt-in."""
    return bool(((config.int8 or {}).get("protocol") or {}).get("within_tolerance"))


def auto_order(config: ModelConfig) -> list[str]:
    """The backends ``--engine auto`` tries for a checkpoint, best first (each backend's ``auto_rank``)."""
    ranks = {name: backend_class(name).auto_rank for name in BACKENDS}
    ranked = sorted((name for name, rank in ranks.items() if rank is not None), key=lambda n: (ranks[n], n))
    if "onnx" in ranked and int8_by_default(config):
        ranked.insert(ranked.index("onnx"), "onnx-int8")
    return ranked


def _auto(folder: Path, order: list[str]) -> str:
    for name in order:
        if backend_class(name).availability(folder).available:
            return name
    raise EngineError(f"{folder}: no engine can run it here: it has no {ONNX_NAME} and torch is not installed")


def load(model: str | Path = "specrnet", engine: str = "auto", *, threads: int = 1, max_batch: int = 64,
         device: str | None = None, triton: TritonOptions | None = None, split: bool | Literal["auto"] = False) -> Engine:
    """Load a checkpoint into an engine; ``auto`` picks the fastest available here.

    ``triton`` (where the server is) is required by, and only used by, engine ``triton``;
    ``threads`` above 1 only by the CPU engines. ``split`` (backends with ``supports_split``: onnx,
    onnx-int8) also loads the network alone, for features from the streaming front end
    (``engines.hop_frontend``): ``engine.feature_logits(features)``; ``split="auto"`` does so where
    the backend supports it and the checkpoint has its network graph (``engine.split`` says which).
    """
    if engine != "auto":
        backend_class(engine)  # an unknown name fails before the checkpoint is read
    if triton is not None and engine != "triton":
        raise EngineError(f"--triton-url is for engine 'triton', not {engine!r}")
    folder = resolve_model(model)
    config = read_config(folder)
    order = auto_order(config) if engine == "auto" else []
    name = _auto(folder, order) if engine == "auto" else engine
    cls = backend_class(name)
    if split == "auto":
        split = cls.supports_split and cls.has_split_view(config)
    elif split and not cls.supports_split:
        raise EngineError(f"split is for engines {split_engines()}, not {name!r}")
    if engine != "auto":
        if threads > 1 and not cls.uses_threads:
            raise EngineError(f"--threads is for the CPU engines; engine {name!r} does not use it")
        if cls.needs_gpu and not (status := cls.availability(folder)).available:
            raise EngineError(f"engine {name!r} is not available here: {status.reason}")
    loaded = cls.from_request(EngineRequest(folder, config, threads=threads, max_batch=max_batch,
                                            device=device, triton=triton, split=split))
    loaded.choice = (f"--engine auto: the first of {', '.join(order)} that runs here"
                     if engine == "auto" else f"--engine {engine}")
    if engine == "auto" and name == "onnx-int8":
        points = 100 * config.int8["protocol"]["tolerance"]
        loaded.choice += (f"; its int8 network kept float32's EER within {points:g} point{'s' * (points != 1)}"
                          " on the generalization protocol")
    return loaded
