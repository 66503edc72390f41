"""TensorRT engine built from the checkpoint's ONNX (front end included), with build caches.

- Precision: FP16 for the network, FP32 for the spectrogram. On TensorRT 10 (``BuilderFlag.FP16``
  exists) the plain ONNX is built with that flag and the front-end layers are pinned to FP32 with
  precision constraints; on TensorRT 11, whose networks are strongly typed, a mixed-precision ONNX
  (float32 front end, float16 network, explicit casts) is exported and built as typed.
- One optimisation profile for batch 1..max_batch (opt at the largest micro-batch bucket).
- A timing cache per TensorRT version and GPU, and an engine cache keyed by the ONNX sha256,
  TensorRT version, GPU name and compute capability, precision and profile: any change rebuilds.
- I/O through torch CUDA tensors on torch's current stream (``set_tensor_address`` +
  ``execute_async_v3``), so the CUDA context is torch's own and no copy leaves the GPU. pycuda is
  not used: it would create a second context competing with torch's.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.checkpoint import ONNX_NAME, ModelConfig, read_config, sha256_file, verify_file
from engines.engine import Availability, Engine, EngineRequest
from engines.errors import EngineError, MissingExtraError

INPUT, OUTPUT = "waveform", "logit"


def cache_dir() -> Path:
    base = os.environ.get("REALTIME_DETECT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "realtime-detect")
    return Path(base) / "tensorrt"


@dataclass(frozen=True)
class BuildKey:
    onnx_sha256: str
    tensorrt: str
    gpu: str
    compute_capability: str
    precision: str
    profile: tuple[int, int, int]
    window_samples: int

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:24]


def _import_trt() -> Any:
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingExtraError("tensorrt", "tensorrt", "the TensorRT engine (from NVIDIA's package index)") from None
    return trt


def strongly_typed(trt: Any) -> bool:
    """TensorRT 11 builds strongly typed networks only; 10 still offers BuilderFlag.FP16."""
    return not hasattr(trt.BuilderFlag, "FP16")


def _pin_frontend_fp32(trt: Any, network: Any) -> int:
    """Keep every layer up to and including the log of the spectrogram in FP32."""
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        pinned += 1
        if layer.type == trt.LayerType.UNARY and layer.op == trt.UnaryOperation.LOG:
            return pinned
    raise EngineError("no LOG layer found in the network: cannot tell the front end from the network")


def build_engine(onnx_path: Path, key: BuildKey, max_batch: int, opt_batch: int, timing_cache: Path) -> bytes:
    trt = _import_trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    typed = strongly_typed(trt)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 2 << 30)
    if key.precision == "fp16" and not typed:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        _pin_frontend_fp32(trt, network)
    profile = builder.create_optimization_profile()
    n = key.window_samples
    profile.set_shape(INPUT, (1, n), (opt_batch, n), (max_batch, n))
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"{onnx_path}: TensorRT failed to build the engine (see the log above)")
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


class TensorRTEngine(Engine):
    name = "tensorrt"
    auto_rank = 0
    needs_gpu = True

    @classmethod
    def from_request(cls, request: EngineRequest) -> Engine:
        return cls(request.folder, request.config, max_batch=request.max_batch)

    @classmethod
    def availability(cls, folder: Path | None) -> Availability:
        try:
            import tensorrt
        except ImportError as e:
            return Availability(False, f"tensorrt is not importable ({e}); its builder libraries come from"
                                " NVIDIA's package index: pip install tensorrt --extra-index-url https://pypi.nvidia.com")
        from engines.backends.cuda_backend import cuda_availability

        if not cuda_availability().available:
            return Availability(False, f"tensorrt {tensorrt.__version__} imports, but torch sees no CUDA GPU")
        if folder is not None and not (folder / ONNX_NAME).is_file():
            return Availability(False, f"{folder} has no {ONNX_NAME} to build from")
        return Availability(True, f"TensorRT {tensorrt.__version__}, FP16 network, engine cached per GPU")

    def __init__(self, folder: Path, config: ModelConfig | None = None, max_batch: int = 1024,
                 opt_batch: int = 64, precision: str = "fp16") -> None:
        trt = _import_trt()
        try:
            import torch
        except ImportError:
            raise MissingExtraError("torch", "torch", "the TensorRT engine's CUDA buffers") from None
        if not torch.cuda.is_available():
            raise EngineError("the TensorRT engine needs a CUDA GPU; torch sees none")
        if precision not in ("fp16", "fp32"):
            raise EngineError(f"precision {precision!r} is not supported; accepted: fp16, fp32")
        config = config or read_config(folder)
        super().__init__(config, max_batch)
        self._torch, self._trt = torch, trt
        onnx_path = self._onnx_for(folder, config, precision, strongly_typed(trt))
        major, minor = torch.cuda.get_device_capability()
        key = BuildKey(sha256_file(onnx_path), trt.__version__, torch.cuda.get_device_name(),
                       f"{major}.{minor}", precision, (1, min(opt_batch, max_batch), max_batch),
                       self.window_samples)
        plan = cache_dir() / f"{config.model_id}-{key.digest()}.plan"
        if plan.is_file():
            blob = plan.read_bytes()
        else:
            blob = build_engine(onnx_path, key, max_batch, min(opt_batch, max_batch),
                                cache_dir() / f"timing-{trt.__version__}-{major}{minor}.cache")
            plan.parent.mkdir(parents=True, exist_ok=True)
            plan.write_bytes(blob)
            (plan.with_suffix(".json")).write_text(json.dumps(asdict(key), indent=2))
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(blob)
        if self._engine is None:
            raise EngineError(f"{plan}: TensorRT could not deserialize the cached engine; delete it to rebuild")
        self._context = self._engine.create_execution_context()
        self.device = "cuda"
        self.precision = precision
        self.plan_path = plan
        # Preallocated device buffers, owned by this engine; host staging is pinned.
        self._in = torch.empty(max_batch, self.window_samples, device="cuda")
        self._out = torch.empty(max_batch, device="cuda")
        self._host_in = torch.empty(max_batch, self.window_samples).pin_memory()
        self._host_out = torch.empty(max_batch).pin_memory()

    @staticmethod
    def _onnx_for(folder: Path, config: ModelConfig, precision: str, typed: bool) -> Path:
        onnx = verify_file(folder, ONNX_NAME, config.onnx_sha256, "onnx_sha256")
        if precision == "fp32" or not typed:
            return onnx
        # Strongly typed FP16: the types must be in the graph itself.
        mixed = cache_dir() / f"{config.model_id}-mixed.onnx"
        if not mixed.is_file():
            from engines.checkpoint import load_detector
            from engines.export import export_onnx

            detector, _ = load_detector(folder)
            export_onnx(detector, mixed, window_samples=config.window_samples, mixed_precision=True)
        return mixed

    def run_device(self, windows: Any) -> Any:
        """Logits for a CUDA float32 tensor [B, N] already on the GPU, on torch's current stream."""
        torch = self._torch
        b = int(windows.shape[0])
        if not self._context.set_input_shape(INPUT, (b, self.window_samples)):
            raise EngineError(f"batch {b} is outside the engine's profile 1..{self.max_batch}")
        out = self._out[:b]
        self._context.set_tensor_address(INPUT, int(windows.data_ptr()))
        self._context.set_tensor_address(OUTPUT, int(out.data_ptr()))
        if not self._context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise EngineError("TensorRT execute_async_v3 failed")
        return out

    def _logits(self, windows: np.ndarray) -> np.ndarray:
        torch = self._torch
        b = len(windows)
        self._host_in.numpy()[:b] = windows
        dev_in = self._in[:b]
        dev_in.copy_(self._host_in[:b], non_blocking=True)
        out = self.run_device(dev_in)
        self._host_out[:b].copy_(out, non_blocking=True)
        torch.cuda.current_stream().synchronize()
        return self._host_out.numpy()[:b].copy()

    def info(self) -> dict[str, Any]:
        return {**super().info(), "precision": f"{self.precision} network, fp32 front end",
                "tensorrt": self._trt.__version__, "plan": str(self.plan_path)}
