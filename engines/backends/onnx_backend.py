"""ONNX Runtime engines: run the exported front end + network with no torch import.

``onnx`` runs model.onnx (float32); ``onnx-int8`` runs model.int8.onnx, the same graph with the
network quantized to int8 and the front end left in float32 (python -m engines.quantize).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from engines.checkpoint import INT8_NAME, ONNX_NAME, ModelConfig, read_config, verify_file, verify_int8
from engines.engine import Availability, Engine, EngineRequest
from engines.errors import CheckpointError, EngineError

INPUT_NAME = "waveform"
# Most windows per session.run. On the CPU, ms per window is flat from 1 to 16 windows per run
# with one intra-op thread and from 4 up with two (SpecRNet, fp32 and int8, measured on the 2-core
# VM), while ORT's arena keeps the high-water mark of the largest run for good: ~17 MB per float32
# SpecRNet window, so a 64-window run would pin ~1 GB. Larger batches are scored in runs of this size.
CPU_RUN_BATCH = 4


class OnnxEngine(Engine):
    name = "onnx"
    precision = "fp32"
    disabled_optimizers: tuple[str, ...] = ()
    auto_rank = 2
    uses_threads = True

    @classmethod
    def from_request(cls, request: EngineRequest) -> Engine:
        return cls(request.folder, request.config, threads=request.threads, max_batch=request.max_batch)

    @classmethod
    def availability(cls, folder: Path | None) -> Availability:
        if importlib.util.find_spec("onnxruntime") is None:
            return Availability(False, "onnxruntime is not installed: pip install onnxruntime")
        if folder is not None and not (folder / ONNX_NAME).is_file():
            return Availability(False, f"{folder} has no {ONNX_NAME}")
        return Availability(True, "onnxruntime on the CPU")

    def __init__(self, folder: Path, config: ModelConfig, threads: int = 1, max_batch: int = 64,
                 providers: list[str] | None = None) -> None:
        super().__init__(config, max_batch)
        import onnxruntime as ort

        path = self._model_path(folder, config)
        opts = ort.SessionOptions()
        # Our own threads decide parallelism (one inference worker per process); ORT's spinning
        # thread pool would steal the cores the audio and network threads need.
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # EXTENDED, not ALL: ALL adds the NCHWc layout transform, which pads SpecRNet's 20-channel
        # convolutions to the SIMD block and measured 1.5x slower for the largest one (tools/bench.py).
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Without memory patterns each tensor comes from the arena on its own and freed chunks are
        # reused across batch sizes; with them, each input shape and each concurrent run wants its
        # own large block: two threads running 1..4 windows climbed 143 -> 213 MB after warm-up with
        # patterns, 149 -> 163 MB without. No speed cost measured (SpecRNet fp32 and int8, 1 and 4
        # windows per run).
        opts.enable_mem_pattern = False
        available = ort.get_available_providers()
        wanted = providers or ["CPUExecutionProvider"]
        chosen = [p for p in wanted if p in available]
        if not chosen:
            raise EngineError(f"ONNX Runtime providers {wanted} are not available here; available: {available}")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=chosen,
                                                disabled_optimizers=list(self.disabled_optimizers))
        except Exception as e:  # ORT raises its own untyped errors for a bad graph
            raise EngineError(f"{path}: ONNX Runtime cannot load the model ({e})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].shape[1] != self.window_samples:
            shape = [(i.name, i.shape) for i in inputs]
            raise EngineError(f"{path}: expected one input '{INPUT_NAME}' [batch, {self.window_samples}], got {shape}")
        self.threads = threads
        self.device = "cpu" if chosen[0] == "CPUExecutionProvider" else chosen[0]
        if self.device == "cpu":
            self.run_batch = min(max_batch, CPU_RUN_BATCH)
        self._version = ort.__version__

    def _model_path(self, folder: Path, config: ModelConfig) -> Path:
        return verify_file(folder, ONNX_NAME, config.onnx_sha256, "onnx_sha256")

    def _logits(self, windows: np.ndarray) -> np.ndarray:
        return self.session.run(None, {INPUT_NAME: windows})[0].reshape(-1)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "precision": self.precision, "onnxruntime": self._version, "threads": self.threads}


class OnnxInt8Engine(OnnxEngine):
    """Same session options as ``onnx``; opt-in only (``auto`` never picks it)."""

    name = "onnx-int8"
    precision = "int8"
    auto_rank = None  # its scores differ slightly from the float32 model's

    @classmethod
    def availability(cls, folder: Path | None) -> Availability:
        base = super().availability(None)
        if not base.available:
            return base
        if folder is None:
            return Availability(True, f"onnxruntime on the CPU, int8 network (needs {INT8_NAME}; opt-in)")
        try:
            verify_int8(folder, read_config(folder))
        except (EngineError, CheckpointError) as e:
            return Availability(False, str(e))
        return Availability(True, "onnxruntime on the CPU, int8 network (opt-in)")
    # This pass moves QuantizeLinear up across MaxPool so the pool runs on int8, which ORT does
    # 4x slower than in float32 here (ResMax's first pool: 7.2 ms vs 1.75 ms); max commutes with
    # quantization, so the scores are the same without it.
    disabled_optimizers = ("QDQPropagationTransformer",)

    def _model_path(self, folder: Path, config: ModelConfig) -> Path:
        return verify_int8(folder, config)
