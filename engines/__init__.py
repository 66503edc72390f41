"""What turns a window into a probability: front end, model zoo, checkpoints, engine backends.

``engines.load(model, engine)`` is the entry point; it imports torch only for the torch/CUDA
engines, so the ONNX Runtime path runs on a machine without torch.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engines.checkpoint import INT8_NAME, ONNX_NAME, read_config, resolve_dir, verify_int8
from engines.engine import Engine
from engines.errors import CheckpointError, EngineError, MissingExtraError

if TYPE_CHECKING:  # pragma: no cover
    from engines.backends.triton_backend import TritonOptions

__all__ = ["Engine", "EngineError", "CheckpointError", "MissingExtraError", "load", "resolve_model",
           "available_engines", "SHIPPED_MODELS", "ENGINE_CHOICES", "SPLIT_ENGINES"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED_MODELS = ("specrnet", "resmax")
# onnx-int8 is opt-in: auto never picks it (its scores differ slightly from the float32 model's).
# triton is opt-in too: it needs a server (--triton-url).
ENGINE_CHOICES = ("auto", "onnx", "onnx-int8", "torch", "cuda", "tensorrt", "triton")
# Engines that can run a checkpoint's network alone on streamed features (load(split=True)).
SPLIT_ENGINES = ("onnx", "onnx-int8")


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


def available_engines(model: str | Path | None = None) -> list[EngineStatus]:
    """What can run here and, for what cannot, why (for --list-engines and --engine auto).

    With ``model``, onnx-int8 is available only if that checkpoint carries its int8 file.
    """
    has_ort = importlib.util.find_spec("onnxruntime") is not None
    out = [EngineStatus("onnx", has_ort, "onnxruntime on the CPU" if has_ort else
                        "onnxruntime is not installed: pip install onnxruntime")]
    out.append(_int8_status(has_ort, model))
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
    out.append(_tensorrt_status(cuda_ok))
    has_triton = importlib.util.find_spec("tritonclient") is not None
    out.append(EngineStatus("triton", has_triton, "gRPC client of a Triton server (needs --triton-url; opt-in)"
                            if has_triton else "tritonclient is not installed: pip install 'realtime-detect[triton]'"
                            " -c constraints.txt"))
    return out


def _int8_status(has_ort: bool, model: str | Path | None) -> EngineStatus:
    if not has_ort:
        return EngineStatus("onnx-int8", False, "onnxruntime is not installed: pip install onnxruntime")
    if model is None:
        return EngineStatus("onnx-int8", True, f"onnxruntime on the CPU, int8 network (needs {INT8_NAME}; opt-in)")
    try:
        folder = resolve_model(model)
        verify_int8(folder, read_config(folder))
    except (EngineError, CheckpointError) as e:
        return EngineStatus("onnx-int8", False, str(e))
    return EngineStatus("onnx-int8", True, f"onnxruntime on the CPU, int8 network of model {str(model)!r} (opt-in)")


def _tensorrt_status(cuda_ok: bool) -> EngineStatus:
    try:
        import tensorrt
    except ImportError as e:
        return EngineStatus("tensorrt", False, f"tensorrt is not importable ({e}); its builder libraries come"
                            " from NVIDIA's package index: pip install tensorrt --extra-index-url https://pypi.nvidia.com")
    if not cuda_ok:
        return EngineStatus("tensorrt", False, f"tensorrt {tensorrt.__version__} imports, but torch sees no CUDA GPU")
    return EngineStatus("tensorrt", True, f"TensorRT {tensorrt.__version__}, FP16 network, engine cached per GPU")


def load(model: str | Path = "specrnet", engine: str = "auto", *, threads: int = 1, max_batch: int = 64,
         device: str | None = None, triton: TritonOptions | None = None, split: bool = False) -> Engine:
    """Load a checkpoint into an engine; ``auto`` picks the fastest available here.

    ``triton`` (where the server is) is required by, and only used by, engine ``triton``.
    ``split`` (engines onnx and onnx-int8) also loads the network alone, for features from the
    streaming front end (``engines.hop_frontend``): ``engine.feature_logits(features)``.
    """
    if engine not in ENGINE_CHOICES:
        raise EngineError(f"engine {engine!r} is not known; accepted: {ENGINE_CHOICES}")
    if split and engine not in SPLIT_ENGINES:
        raise EngineError(f"split is for engines {SPLIT_ENGINES}, not {engine!r}")
    if (engine == "triton") != (triton is not None):
        raise EngineError("engine 'triton' needs --triton-url grpc://HOST:PORT" if triton is None
                          else f"--triton-url is for engine 'triton', not {engine!r}")
    folder = resolve_model(model)
    config = read_config(folder)
    if engine == "triton":
        from engines.backends.triton_backend import TritonEngine

        return TritonEngine(config, triton, max_batch=max_batch)
    if engine == "auto":
        status = {s.name: s for s in available_engines()}
        if status["tensorrt"].available and (folder / ONNX_NAME).is_file():
            engine = "tensorrt"
        elif status["cuda"].available:
            engine = "cuda"
        elif status["onnx"].available and (folder / ONNX_NAME).is_file():
            engine = "onnx"
        elif status["torch"].available:
            engine = "torch"
        else:
            raise EngineError(f"{folder}: no engine can run it here: it has no {ONNX_NAME} and torch is not installed")
    if engine == "onnx":
        from engines.backends.onnx_backend import OnnxEngine

        return OnnxEngine(folder, config, threads=threads, max_batch=max_batch, split=split)
    if engine == "onnx-int8":
        from engines.backends.onnx_backend import OnnxInt8Engine

        return OnnxInt8Engine(folder, config, threads=threads, max_batch=max_batch, split=split)
    if engine == "torch":
        from engines.backends.torch_backend import TorchEngine

        return TorchEngine(folder, device=device or "cpu", threads=threads, max_batch=max_batch)
    status = {s.name: s for s in available_engines()}
    if not status[engine].available:
        raise EngineError(f"engine {engine!r} is not available here: {status[engine].reason}")
    if engine == "cuda":
        from engines.backends.cuda_backend import CudaGraphEngine

        return CudaGraphEngine(folder, device=device or "cuda", max_batch=max(max_batch, 1))
    from engines.backends.tensorrt_backend import TensorRTEngine

    return TensorRTEngine(folder, config, max_batch=max_batch)
