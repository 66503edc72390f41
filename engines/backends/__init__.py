"""Engine backends, looked up by name.

Each backend is one module with an :class:`~engines.engine.Engine` subclass that implements
``from_request`` and ``availability``; adding one is that module and one line in ``BACKENDS``
(or a :func:`register` call from a plugin). Modules are imported only when their backend is
asked about, and import their runtimes (onnxruntime, torch, tensorrt, tritonclient) lazily.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from engines.errors import EngineError

if TYPE_CHECKING:  # pragma: no cover
    from engines.engine import Engine

#: name -> "module:Class"
BACKENDS: dict[str, str] = {
    "onnx": "engines.backends.onnx_backend:OnnxEngine",
    "onnx-int8": "engines.backends.onnx_backend:OnnxInt8Engine",
    "torch": "engines.backends.torch_backend:TorchEngine",
    "cuda": "engines.backends.cuda_backend:CudaGraphEngine",
    "tensorrt": "engines.backends.tensorrt_backend:TensorRTEngine",
    "triton": "engines.backends.triton_backend:TritonEngine",
}


def register(name: str, target: str) -> None:
    """Add a backend (``target`` = "module:Class") under ``name``; a taken name is refused."""
    if name in BACKENDS or name == "auto":
        raise EngineError(f"engine name {name!r} is taken")
    if ":" not in target:
        raise EngineError(f"backend target {target!r} must be 'module:Class'")
    BACKENDS[name] = target


def backend_class(name: str) -> type[Engine]:
    if name not in BACKENDS:
        raise EngineError(f"engine {name!r} is not known; accepted: auto, {', '.join(BACKENDS)}")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)
