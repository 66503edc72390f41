"""What turns a window into a probability: front end, model zoo, checkpoints, engine backends.

``engines.load(model, engine)`` is the entry point; it imports torch only for the torch/CUDA
engines, so the ONNX Runtime path runs on a machine without torch.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from engines.checkpoint import ONNX_NAME, read_config, resolve_dir
from engines.engine import Engine
from engines.errors import CheckpointError, EngineError, MissingExtraError

__all__ = ["Engine", "EngineError", "CheckpointError", "MissingExtraError", "load", "resolve_model",
           "available_engines", "SHIPPED_MODELS", "ENGINE_CHOICES"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED_MODELS = ("specrnet", "resmax")
ENGINE_CHOICES = ("auto", "onnx", "torch", "cuda", "tensorrt")


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


def available_engines() -> list[EngineStatus]:
    """What can run here and, for what cannot, why (for --list-engines and --engine auto)."""
    out = [EngineStatus("onnx", importlib.util.find_spec("onnxruntime") is not None,
                        "onnxruntime on the CPU" if importlib.util.find_spec("onnxruntime") else
                        "onnxruntime is not installed: pip install onnxruntime")]
    has_torch = importlib.util.find_spec("torch") is not None
    out.append(EngineStatus("torch", has_torch, "torch eager on the CPU" if has_torch else
                            "torch is not installed: pip install 'realtime-detect[torch]' -c constraints.txt"))
    cuda_ok, cuda_reason = False, "torch is not installed"
    if has_torch:
        import torch

        cuda_ok = torch.cuda.is_available()
        cuda_reason = (f"torch CUDA on {torch.cuda.get_device_name(0)}" if cuda_ok
                       else f"torch {torch.__version__} sees no CUDA GPU")
    out.append(EngineStatus("cuda", cuda_ok, cuda_reason))
    trt = importlib.util.find_spec("tensorrt") is not None
    out.append(EngineStatus("tensorrt", False, "TensorRT engine not built in this release" if trt else
                            "tensorrt is not importable (its builder comes from NVIDIA's package index)"))
    return out


def load(model: str | Path = "specrnet", engine: str = "auto", *, threads: int = 1, max_batch: int = 64,
         device: str | None = None) -> Engine:
    """Load a checkpoint into an engine; ``auto`` picks the fastest available here."""
    if engine not in ENGINE_CHOICES:
        raise EngineError(f"engine {engine!r} is not known; accepted: {ENGINE_CHOICES}")
    folder = resolve_model(model)
    config = read_config(folder)
    if engine == "auto":
        status = {s.name: s for s in available_engines()}
        # TensorRT and CUDA plug in here ahead of ONNX when present.
        if status["cuda"].available:
            engine = "cuda"
        elif status["onnx"].available and (folder / ONNX_NAME).is_file():
            engine = "onnx"
        elif status["torch"].available:
            engine = "torch"
        else:
            raise EngineError(f"{folder}: no engine can run it here: it has no {ONNX_NAME} and torch is not installed")
    if engine == "onnx":
        from engines.backends.onnx_backend import OnnxEngine

        return OnnxEngine(folder, config, threads=threads, max_batch=max_batch)
    if engine in ("torch", "cuda"):
        from engines.backends.torch_backend import TorchEngine

        dev = device or ("cuda" if engine == "cuda" else "cpu")
        return TorchEngine(folder, device=dev, threads=threads, max_batch=max_batch)
    status = {s.name: s for s in available_engines()}
    raise EngineError(f"engine 'tensorrt' is not available here: {status['tensorrt'].reason}")
