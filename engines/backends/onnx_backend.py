"""ONNX Runtime engines: run the exported front end + network with no torch import.

``onnx`` runs model.onnx (float32); ``onnx-int8`` runs model.int8.onnx, the same graph with the
network quantized to int8 and the front end left in float32 (python -m engines.quantize).
With ``split``, either also runs its network alone (network.onnx / network.int8.onnx) on
features from the streaming front end (engines.hop_frontend): ``feature_logits``; and ``onnx``, for a
streaming network (``specrnet_stream``), its trunk and readout graphs (engines.stream_network):
``trunk_frames`` and ``readout_logits``. Those stay float32: onnx-int8 runs such a checkpoint per hop
through its int8 network view.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from engines.checkpoint import (
    INT8_NAME,
    ONNX_NAME,
    ModelConfig,
    read_config,
    verify_file,
    verify_int8,
    verify_network,
    verify_stream,
)
from engines.engine import Availability, Engine, EngineRequest
from engines.errors import CheckpointError, EngineError
from engines.frontend_config import FrontEndConfig

INPUT_NAME, FEATURES_NAME, TRUNK_NAME = "waveform", "features", "trunk"
# Most windows per session.run. On the CPU, ms per window is flat from 1 to 16 windows per run
# with one intra-op thread and from 4 up with two (SpecRNet, fp32 and int8, measured on the 2-core
# VM), while ORT's arena keeps the high-water mark of the largest run for good: ~17 MB per float32
# SpecRNet window, so a 64-window run would pin ~1 GB. The engine's preferred_batch on the CPU.
CPU_RUN_BATCH = 4


def _session_options(ort: Any, threads: int, level: Any) -> Any:
    """The engine's ONNX Runtime session options, at graph optimization ``level``."""
    opts = ort.SessionOptions()
    # Our own threads decide parallelism (the batcher's inference workers); ORT's spinning
    # thread pool would steal the cores the audio and network threads need.
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = level
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Without memory patterns each tensor comes from the arena on its own and freed chunks are
    # reused across batch sizes; with them, each input shape and each concurrent run wants its
    # own large block: two threads running 1..4 windows climbed 143 -> 213 MB after warm-up with
    # patterns, 149 -> 163 MB without. No speed cost measured (SpecRNet fp32 and int8, 1 and 4
    # windows per run).
    opts.enable_mem_pattern = False
    return opts


class OnnxEngine(Engine):
    name = "onnx"
    precision = "fp32"
    disabled_optimizers: tuple[str, ...] = ()
    auto_rank = 2
    uses_threads = True
    supports_split = True
    #: Whether ``split`` also loads a streaming network's trunk and readout graphs (float32 only).
    runs_stream_graphs = True

    @classmethod
    def from_request(cls, request: EngineRequest) -> Engine:
        return cls(request.folder, request.config, threads=request.threads, max_batch=request.max_batch,
                   split=request.split)

    @classmethod
    def availability(cls, folder: Path | None) -> Availability:
        if importlib.util.find_spec("onnxruntime") is None:
            return Availability(False, "onnxruntime is not installed: pip install onnxruntime")
        if folder is not None and not (folder / ONNX_NAME).is_file():
            return Availability(False, f"{folder} has no {ONNX_NAME}")
        return Availability(True, "onnxruntime on the CPU")

    def __init__(self, folder: Path, config: ModelConfig, threads: int = 1, max_batch: int = 64,
                 providers: list[str] | None = None, split: bool = False) -> None:
        super().__init__(config, max_batch)
        import onnxruntime as ort

        path = self._model_path(folder, config)
        # EXTENDED, not ALL: ALL adds the NCHWc layout transform, which pads SpecRNet's 20-channel
        # convolutions to the SIMD block and measured 1.5x slower for the largest one (tools/bench.py).
        opts = _session_options(ort, threads, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
        available = ort.get_available_providers()
        wanted = providers or ["CPUExecutionProvider"]
        chosen = [p for p in wanted if p in available]
        if not chosen:
            raise EngineError(f"ONNX Runtime providers {wanted} are not available here; available: {available}")
        self.session = self._session(ort, path, opts, chosen, INPUT_NAME, [self.window_samples])
        fe = FrontEndConfig.from_dict(config.frontend)
        self.features_shape = (1, fe.n_features, fe.n_frames(self.window_samples))
        # The network alone gets its own session (and arena) only when asked for.
        self.network_session = None
        if split:
            self.network_session = self._session(ort, self._network_path(folder, config), opts, chosen,
                                                 FEATURES_NAME, list(self.features_shape))
        # A streaming network's parts: trunk rows [n, 1, n_features, tile] -> [n, channels, step],
        # readout [B, channels, frames] -> logit (shapes from model.json's stream geometry).
        self.trunk_session = self.readout_session = None
        self.stream = config.stream if split and self.runs_stream_graphs else None
        if self.stream is not None:
            g = self.stream["geometry"]
            trunk, readout = verify_stream(folder, config)
            # ALL for the trunk: its block 0 (20 channels, padded to 32, on a hop's 80 x 54 frames: most of
            # its time) runs 6% faster in the NCHWc layout (median of 30 interleaved runs of 4 rows, 0.92 ->
            # 0.87 ms per row; outputs within 2e-7), unlike SpecRNet's convolutions.
            trunk_opts = _session_options(ort, threads, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
            self.trunk_session = self._session(ort, trunk, trunk_opts, chosen, FEATURES_NAME, [1, fe.n_features, None])
            self.readout_session = self._session(ort, readout, opts, chosen, TRUNK_NAME, [g["channels"], g["frames"]])
        self.threads = threads
        self.device = "cpu" if chosen[0] == "CPUExecutionProvider" else chosen[0]
        if self.device == "cpu":
            self.preferred_batch = min(max_batch, CPU_RUN_BATCH)
        self._version = ort.__version__

    def _session(self, ort: Any, path: Path, opts: Any, providers: list[str], name: str, shape: list[int]) -> Any:
        """A session of ``path`` whose one input is ``name`` [batch, *shape]."""
        try:
            session = ort.InferenceSession(str(path), sess_options=opts, providers=providers,
                                           disabled_optimizers=list(self.disabled_optimizers))
        except Exception as e:  # ORT raises its own untyped errors for a bad graph
            raise EngineError(f"{path}: ONNX Runtime cannot load the model ({e})") from None
        inputs = session.get_inputs()
        # None in ``shape``: any length (the trunk's tile follows the run's hop).
        got = list(inputs[0].shape[1:]) if len(inputs) == 1 else []
        if len(inputs) != 1 or inputs[0].name != name or [None if s is None else g for g, s in zip(got, shape)] != shape:
            got = [(i.name, i.shape) for i in inputs]
            raise EngineError(f"{path}: expected one input '{name}' [batch, {', '.join(map(str, shape))}], got {got}")
        return session

    @classmethod
    def has_split_view(cls, config: ModelConfig) -> bool:
        return config.network is not None

    @property
    def split(self) -> bool:
        return self.network_session is not None

    def _model_path(self, folder: Path, config: ModelConfig) -> Path:
        return verify_file(folder, ONNX_NAME, config.onnx_sha256, "onnx_sha256")

    def _network_path(self, folder: Path, config: ModelConfig) -> Path:
        return verify_network(folder, config)

    def _logits(self, windows: np.ndarray) -> np.ndarray:
        return self.session.run(None, {INPUT_NAME: windows})[0].reshape(-1)

    def feature_logits(self, features: np.ndarray) -> np.ndarray:
        """Calibrated logits float32 [B] of features [B, 1, n_features, frames] (HopFrontEnd's),
        through the network graph alone; the engine must be loaded with ``split``."""
        if self.network_session is None:
            raise EngineError(f"engine {self.name} was loaded without split=True: it has no network graph")
        if not isinstance(features, np.ndarray) or features.shape[1:] != self.features_shape:
            got = list(features.shape) if isinstance(features, np.ndarray) else type(features).__name__
            raise EngineError(f"features must have shape [B, {', '.join(map(str, self.features_shape))}], got {got}")
        x = np.ascontiguousarray(features, dtype=np.float32)
        if not np.isfinite(x).all():
            raise EngineError("features contain NaN or Inf")
        return self._calibrated(x, self._network_logits)

    def _network_logits(self, features: np.ndarray) -> np.ndarray:
        return self.network_session.run(None, {FEATURES_NAME: features})[0].reshape(-1)

    def trunk_frames(self, rows: np.ndarray) -> np.ndarray:
        """A streaming network's trunk frames float32 [n, channels, step] of feature rows
        [n, 1, n_features, tile] (``engines.stream_network``; trusted caller: shapes as exported)."""
        if self.trunk_session is None:
            raise EngineError(f"engine {self.name} has no trunk graph: load a streaming network with split=True")
        step = 8 * self.preferred_batch  # rows per run: a whole window is ~8 rows of an eighth of its frames
        return np.concatenate([self.trunk_session.run(None, {FEATURES_NAME: rows[i : i + step]})[0]
                               for i in range(0, len(rows), step)])

    def readout_logits(self, trunk: np.ndarray) -> np.ndarray:
        """Calibrated logits float32 [B] of windows' trunk frames [B, channels, frames]."""
        if self.readout_session is None:
            raise EngineError(f"engine {self.name} has no readout graph: load a streaming network with split=True")
        return self._calibrated(np.ascontiguousarray(trunk, dtype=np.float32),
                                lambda z: self.readout_session.run(None, {TRUNK_NAME: z})[0].reshape(-1))

    def _warm_once(self, windows: np.ndarray, network_only: bool = False) -> None:
        if not network_only:
            super()._warm_once(windows)
        if self.stream is not None:  # per hop, a streaming network runs its readout, not the network graph
            g = self.stream["geometry"]
            self.readout_logits(np.zeros((len(windows), g["channels"], g["frames"]), dtype=np.float32))
        elif self.network_session is not None:
            self.feature_logits(np.zeros((len(windows), *self.features_shape), dtype=np.float32))

    def info(self) -> dict[str, Any]:
        return {**super().info(), "precision": self.precision, "onnxruntime": self._version, "threads": self.threads,
                "split": self.split, "stream": self.stream is not None}


class OnnxInt8Engine(OnnxEngine):
    """Same session options as ``onnx``. ``auto`` picks it only for a checkpoint whose int8 record
    holds the generalization protocol's verdict within tolerance (``engines.int8_by_default``)."""

    name = "onnx-int8"
    precision = "int8"
    auto_rank = None  # its scores differ slightly from float32's: ranked per checkpoint (engines.auto_order)
    runs_stream_graphs = False  # no int8 trunk and readout: per hop through network.int8.onnx

    @classmethod
    def availability(cls, folder: Path | None) -> Availability:
        base = super().availability(None)
        if not base.available:
            return base
        if folder is None:
            return Availability(True, f"onnxruntime on the CPU, int8 network (needs {INT8_NAME})")
        try:
            verify_int8(folder, read_config(folder))
        except (EngineError, CheckpointError) as e:
            return Availability(False, str(e))
        return Availability(True, "onnxruntime on the CPU, int8 network")
    # This pass moves QuantizeLinear up across MaxPool so the pool runs on int8, which ORT does
    # 4x slower than in float32 here (ResMax's first pool: 7.2 ms vs 1.75 ms); max commutes with
    # quantization, so the scores are the same without it.
    disabled_optimizers = ("QDQPropagationTransformer",)

    @classmethod
    def has_split_view(cls, config: ModelConfig) -> bool:
        return config.int8 is not None and "network" in config.int8

    def _model_path(self, folder: Path, config: ModelConfig) -> Path:
        return verify_int8(folder, config)

    def _network_path(self, folder: Path, config: ModelConfig) -> Path:
        return verify_network(folder, config, int8=True)
