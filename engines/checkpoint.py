"""Checkpoint format: ``model.safetensors`` (weights) + ``model.json`` (everything else) and,
for shipped models, ``model.onnx`` (front end + network, so CPU users need no torch) and optionally
``model.int8.onnx`` (the same graph with an int8 network, made by ``python -m engines.quantize``),
and ``network.onnx`` / ``network.int8.onnx``: their networks alone (features in), for the streaming
front end; views that read their weights from the bytes of the whole graphs (``engines.split``).
A streaming network (``specrnet_stream``) also gets ``trunk.onnx`` and ``readout.onnx``, its two
parts, for the network once per hop (``engines.stream_network``), exported from the same weights.

No pickle anywhere: safetensors holds only tensors, JSON only plain data. Every file is bound to
the JSON by its sha256, so a swapped or edited file is refused before it is used. This module
imports no torch; ``save_checkpoint`` and ``load_detector`` import it when called.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engines.errors import CheckpointError, EngineError, MissingExtraError

if TYPE_CHECKING:  # pragma: no cover
    from engines.models import Detector

FORMAT = "realtime-detect-checkpoint/1"
CONFIG_NAME, WEIGHTS_NAME, ONNX_NAME = "model.json", "model.safetensors", "model.onnx"
INT8_NAME = "model.int8.onnx"
NETWORK_NAME, NETWORK_INT8_NAME = "network.onnx", "network.int8.onnx"
TRUNK_NAME, READOUT_NAME = "trunk.onnx", "readout.onnx"
INT8_COMMAND = "python -m engines.quantize --model {folder} --calibration AUDIO_DIR_OR_MANIFEST"
SPLIT_COMMAND = "python -m engines.split --model {folder}"
SUPPORTED_RATES = (16000,)


@dataclass
class ModelConfig:
    """Contents of model.json."""

    architecture: str
    frontend: dict[str, Any]
    weights_sha256: str
    arch_params: dict[str, Any] = field(default_factory=dict)
    sample_rate: int = 16000
    window_s: float = 4.0
    hop_s: float = 0.5
    threshold: float = 0.5
    # Calibrated logit = scale * logit + bias (temperature scaling on dev data; identity by default).
    calibration: dict[str, float] = field(default_factory=lambda: {"scale": 1.0, "bias": 0.0})
    training_data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    parameters: int = 0
    onnx_sha256: str | None = None
    # Written by python -m engines.quantize: {"sha256": of model.int8.onnx, "onnx_sha256": of the
    # model.onnx it was made from, "calibration": {...}, "quantization": {...}}. Absent in older checkpoints.
    int8: dict[str, Any] | None = None
    # Written by python -m engines.split and save_checkpoint: {"sha256": of network.onnx,
    # "source_sha256": of the model.onnx whose bytes it reads}; model.int8.onnx's view is
    # recorded the same way as int8["network"]. Absent in older checkpoints.
    network: dict[str, Any] | None = None
    # Written by save_checkpoint for a streaming network: {"trunk": {"sha256"}, "readout": {"sha256"},
    # "weights_sha256": of the weights both were exported from, "geometry": {frames, first, stride,
    # context, channels, window_frames}} (engines.stream_network). Absent for other architectures.
    stream: dict[str, Any] | None = None
    created: str = ""
    format: str = FORMAT

    @property
    def model_id(self) -> str:
        return f"{self.architecture}-{self.weights_sha256[:8]}"

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "format": str, "architecture": str, "frontend": dict, "weights_sha256": str,
    "sample_rate": int, "window_s": (int, float), "hop_s": (int, float), "threshold": (int, float),
    "calibration": dict, "training_data": dict, "metrics": dict,
}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_dir(path: str | Path) -> Path:
    """Accept the checkpoint folder or any of its files."""
    p = Path(path)
    if p.is_file() and p.name in (CONFIG_NAME, WEIGHTS_NAME, ONNX_NAME, INT8_NAME, NETWORK_NAME, NETWORK_INT8_NAME,
                                  TRUNK_NAME, READOUT_NAME):
        p = p.parent
    if not p.is_dir():
        raise CheckpointError(path, "path", "not a checkpoint folder (expected a folder with model.json)")
    if not (p / CONFIG_NAME).is_file():
        raise CheckpointError(p, CONFIG_NAME, "missing: a checkpoint folder holds model.json and model.safetensors")
    return p


def read_config(path: str | Path) -> ModelConfig:
    """Parse and validate model.json; raises CheckpointError naming the offending field."""
    folder = resolve_dir(path)
    cfg_path = folder / CONFIG_NAME
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(cfg_path, "json", f"not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(cfg_path, "json", "top level must be an object")
    for name, typ in _REQUIRED.items():
        if name not in raw:
            raise CheckpointError(cfg_path, name, "missing")
        value = raw[name]
        if not isinstance(value, typ) or isinstance(value, bool):
            raise CheckpointError(cfg_path, name, f"has type {type(value).__name__}, expected {_typename(typ)}")
    if raw["format"] != FORMAT:
        raise CheckpointError(cfg_path, "format", f"{raw['format']!r} is not supported; accepted: {FORMAT!r}")
    unknown = set(raw) - set(ModelConfig.__dataclass_fields__)
    if unknown:
        raise CheckpointError(cfg_path, sorted(unknown)[0], "is not a known field")
    cfg = ModelConfig(**raw)
    if cfg.sample_rate not in SUPPORTED_RATES:
        raise CheckpointError(cfg_path, "sample_rate", f"{cfg.sample_rate} Hz is not supported; accepted: {SUPPORTED_RATES}")
    if not (0.5 <= cfg.window_s <= 30.0) or not (0.0 < cfg.hop_s <= 30.0):
        raise CheckpointError(cfg_path, "window_s", f"window {cfg.window_s} s / hop {cfg.hop_s} s out of range (0.5..30 s)")
    if not (0.0 < cfg.threshold < 1.0) or not math.isfinite(cfg.threshold):
        raise CheckpointError(cfg_path, "threshold", f"{cfg.threshold} must be a probability in (0, 1)")
    if set(cfg.calibration) != {"scale", "bias"}:
        raise CheckpointError(cfg_path, "calibration", "must have exactly the keys 'scale' and 'bias'")
    if len(cfg.weights_sha256) != 64:
        raise CheckpointError(cfg_path, "weights_sha256", "must be a 64-digit hex sha256")
    if cfg.int8 is not None and not (isinstance(cfg.int8, dict) and isinstance(cfg.int8.get("sha256"), str)
                                     and len(cfg.int8["sha256"]) == 64):
        raise CheckpointError(cfg_path, "int8", "must be an object with a 64-digit hex 'sha256'; rerun "
                              + INT8_COMMAND.format(folder=folder))
    for name, record in (("network", cfg.network), ("int8.network", (cfg.int8 or {}).get("network"))):
        if record is not None and not _is_view_record(record):
            raise CheckpointError(cfg_path, name, "must be an object with 64-digit hex 'sha256' and 'source_sha256';"
                                  " rerun " + SPLIT_COMMAND.format(folder=folder))
    if cfg.stream is not None and not _is_stream_record(cfg.stream):
        raise CheckpointError(cfg_path, "stream", "must be an object with 'trunk' and 'readout' (each with a 64-digit"
                              f" hex 'sha256'), 'weights_sha256' and integer 'geometry' fields {STREAM_GEOMETRY}")
    from engines.frontend_config import FrontEndConfig

    try:
        fe = FrontEndConfig.from_dict(cfg.frontend)
    except (TypeError, ValueError) as e:
        raise CheckpointError(cfg_path, "frontend", str(e)) from None
    if fe.sample_rate != cfg.sample_rate:
        raise CheckpointError(cfg_path, "frontend", f"sample_rate {fe.sample_rate} differs from the model's {cfg.sample_rate}")
    return cfg


def verify_file(folder: Path, name: str, expected: str | None, fieldname: str, fix: str = "") -> Path:
    """Check that ``folder/name`` exists and hashes to the sha256 recorded in model.json;
    ``fix`` (how to remake the file) ends the error message when given."""
    path = folder / name
    tail = f"; {fix}" if fix else ""
    if expected is None:
        raise CheckpointError(folder / CONFIG_NAME, fieldname, f"not set, so {name} cannot be verified{tail}")
    if not path.is_file():
        raise CheckpointError(path, fieldname, f"file is missing{tail}")
    actual = sha256_file(path)
    if actual != expected:
        raise CheckpointError(path, fieldname, f"sha256 {actual[:12]}… does not match model.json ({expected[:12]}…):"
                              f" file changed or swapped{tail}")
    return path


def verify_int8(folder: Path, cfg: ModelConfig) -> Path:
    """The verified model.int8.onnx, which must have been made from this checkpoint's model.onnx."""
    command = INT8_COMMAND.format(folder=folder)
    if cfg.int8 is None:
        raise EngineError(f"{folder} has no int8 model ({INT8_NAME}) for engine 'onnx-int8'; make one: {command}")
    fix = f"rerun {command}"
    if cfg.int8.get("onnx_sha256") != cfg.onnx_sha256:
        raise CheckpointError(folder / CONFIG_NAME, "int8.onnx_sha256",
                              f"{INT8_NAME} was made from another {ONNX_NAME}; {fix}")
    return verify_file(folder, INT8_NAME, cfg.int8["sha256"], "int8.sha256", fix)


def verify_network(folder: Path, cfg: ModelConfig, int8: bool = False) -> Path:
    """The verified network view (features -> logit) of model.onnx, or of model.int8.onnx with
    ``int8``; the graph whose bytes it reads is verified too."""
    source = verify_int8(folder, cfg) if int8 else verify_file(folder, ONNX_NAME, cfg.onnx_sha256, "onnx_sha256")
    name, field_name = (NETWORK_INT8_NAME, "int8.network") if int8 else (NETWORK_NAME, "network")
    record = cfg.int8.get("network") if int8 and cfg.int8 is not None else cfg.network
    command = SPLIT_COMMAND.format(folder=folder)
    if record is None:
        raise EngineError(f"{folder} has no network graph ({name}) for the split path; make one: {command}")
    expected = cfg.int8["sha256"] if int8 and cfg.int8 is not None else cfg.onnx_sha256
    if record["source_sha256"] != expected:
        raise CheckpointError(folder / CONFIG_NAME, f"{field_name}.source_sha256",
                              f"{name} was cut from another {source.name}; rerun {command}")
    return verify_file(folder, name, record["sha256"], f"{field_name}.sha256", f"rerun {command}")


def verify_stream(folder: Path, cfg: ModelConfig) -> tuple[Path, Path]:
    """The verified trunk and readout graphs of a streaming network, exported from this checkpoint's weights."""
    record = cfg.stream
    if record is None:
        raise EngineError(f"{folder} ({cfg.architecture}) has no trunk and readout graphs: not a streaming network")
    if record["weights_sha256"] != cfg.weights_sha256:
        raise CheckpointError(folder / CONFIG_NAME, "stream.weights_sha256", f"{TRUNK_NAME} and {READOUT_NAME} were "
                              f"exported from other weights; re-save the checkpoint (engines.checkpoint.save_checkpoint)")
    return (verify_file(folder, TRUNK_NAME, record["trunk"]["sha256"], "stream.trunk.sha256"),
            verify_file(folder, READOUT_NAME, record["readout"]["sha256"], "stream.readout.sha256"))


def write_config(folder: Path, cfg: ModelConfig) -> None:
    """Replace model.json atomically (a reader never sees half a file)."""
    tmp = folder / f".{CONFIG_NAME}.tmp"
    tmp.write_text(cfg.to_json(), encoding="utf-8")
    os.replace(tmp, folder / CONFIG_NAME)


def save_checkpoint(detector: Detector, folder: str | Path, *, architecture: str,
                    arch_params: dict[str, Any] | None = None, export_onnx: bool = True,
                    **meta: Any) -> ModelConfig:
    """Write model.safetensors, model.onnx (optional) and model.json into ``folder``."""
    try:
        from safetensors.torch import save_file
    except ImportError:  # pragma: no cover - safetensors is a core dependency
        raise MissingExtraError("safetensors", "torch", "saving a checkpoint") from None
    from engines.models import count_parameters

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in detector.state_dict().items()}
    save_file(state, str(out / WEIGHTS_NAME), metadata={"format": FORMAT})
    cfg = ModelConfig(
        architecture=architecture,
        arch_params=dict(arch_params or {}),
        frontend=detector.frontend.config.to_dict(),
        weights_sha256=sha256_file(out / WEIGHTS_NAME),
        parameters=count_parameters(detector),
        created=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        **meta,
    )
    if export_onnx:
        from engines.export import export_onnx as _export
        from engines.export import export_stream
        from engines.split import write_view

        _export(detector, out / ONNX_NAME, window_samples=cfg.window_samples)
        cfg.onnx_sha256 = sha256_file(out / ONNX_NAME)
        cfg.network = write_view(out, ONNX_NAME, NETWORK_NAME)
        geometry = getattr(detector.network, "geometry", None)
        if geometry is not None:  # a streaming network: its trunk and readout too
            frames = detector.frontend.config.n_frames(cfg.window_samples)
            export_stream(detector.network, out / TRUNK_NAME, out / READOUT_NAME, geometry(frames),
                          detector.frontend.config.n_features)
            cfg.stream = {"trunk": {"sha256": sha256_file(out / TRUNK_NAME)},
                          "readout": {"sha256": sha256_file(out / READOUT_NAME)},
                          "weights_sha256": cfg.weights_sha256, "geometry": geometry(frames)}
    (out / CONFIG_NAME).write_text(cfg.to_json(), encoding="utf-8")
    return cfg


def load_detector(path: str | Path) -> tuple[Detector, ModelConfig]:
    """Build the torch Detector from a verified checkpoint (eval mode, CPU)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from engines.frontend_config import FrontEndConfig
    from engines.models import build_detector

    folder = resolve_dir(path)
    cfg = read_config(folder)
    weights = verify_file(folder, WEIGHTS_NAME, cfg.weights_sha256, "weights_sha256")
    try:
        detector = build_detector(cfg.architecture, FrontEndConfig.from_dict(cfg.frontend), **cfg.arch_params)
    except (TypeError, ValueError) as e:
        raise CheckpointError(folder / CONFIG_NAME, "architecture", str(e)) from None
    try:
        state = load_file(str(weights))
    except SafetensorError as e:
        raise CheckpointError(weights, "weights_sha256", f"not a readable safetensors file ({e})") from None
    expected = detector.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        which = missing[0] if missing else unexpected[0]
        raise CheckpointError(weights, "architecture", f"tensor '{which}' {'missing' if missing else 'unexpected'}"
                              f" for {cfg.architecture} with arch_params {cfg.arch_params}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(weights, "arch_params", f"tensor '{name}' has shape {tuple(tensor.shape)},"
                                  f" the architecture expects {tuple(expected[name].shape)}")
    detector.load_state_dict(state)
    return detector.eval(), cfg


def _is_view_record(record: object) -> bool:
    return isinstance(record, dict) and all(isinstance(record.get(k), str) and len(record[k]) == 64
                                            for k in ("sha256", "source_sha256"))


STREAM_GEOMETRY = ("frames", "first", "stride", "context", "channels", "window_frames")


def _is_stream_record(record: object) -> bool:
    def hashed(value: object) -> bool:
        return isinstance(value, str) and len(value) == 64

    if not isinstance(record, dict) or not isinstance(record.get("geometry"), dict):
        return False
    parts = [record.get(k) for k in ("trunk", "readout")]
    return (all(isinstance(p, dict) and hashed(p.get("sha256")) for p in parts) and hashed(record.get("weights_sha256"))
            and all(type(record["geometry"].get(k)) is int and record["geometry"][k] >= 0 for k in STREAM_GEOMETRY))


def _typename(t: type | tuple[type, ...]) -> str:
    return " or ".join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__
