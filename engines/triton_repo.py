"""Write a Triton Inference Server model repository for a checkpoint.

    python -m engines.triton_repo --model specrnet --out REPO [--backend onnxruntime|python]

REPO/NAME/config.pbtxt + REPO/NAME/1/model.onnx (the verified front end + network: the server
receives raw float32 [B, window] waveforms and returns one logit per window; calibration and
thresholds stay in the detector). ``--backend python`` adds 1/model.py, which runs the same graph
with ONNX Runtime for tritonservers without the onnxruntime backend (PyTriton's bundle).
``--tensorrt`` also writes REPO/NAME_trt with a TensorRT plan where TensorRT and a GPU are present
(a plan only loads in a tritonserver of the same TensorRT version). The ONNX sha256 is recorded as
a config parameter, so ``--engine triton`` can refuse a server that serves another model.
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from engines.backends.triton_backend import INPUT, OUTPUT, SHA_PARAMETER
from engines.checkpoint import ONNX_NAME, ModelConfig, read_config, verify_file
from engines.errors import EngineError, MissingExtraError

BACKENDS = ("onnxruntime", "python")
KINDS = ("cpu", "gpu")
PYTHON_MODEL = Path(__file__).resolve().parent / "triton_model.py"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class RepoOptions:
    """What the repository's config.pbtxt asks of Triton; validated once, here."""

    name: str | None = None  # Triton model name; None: the checkpoint's architecture
    backend: str = "onnxruntime"
    max_batch: int = 64  # max_batch_size: most windows Triton puts in one execution
    # Dynamic batching waits at most this long for more requests; small, because every detector
    # front end already micro-batches its own streams (--max-wait-ms) before calling the tier.
    max_queue_delay_us: int = 500
    instances: int = 1  # model instances per device (instance_group count)
    kind: str = "cpu"
    threads: int = 1  # ONNX Runtime intra-op threads per instance
    tensorrt: bool = False

    def __post_init__(self) -> None:
        if self.name is not None and not _NAME.match(self.name):
            raise ValueError(f"--name {self.name!r}: use 1-64 letters, digits, '_', '.' or '-', starting with a"
                             " letter or digit")
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend {self.backend!r}: accepted: {', '.join(BACKENDS)}")
        if self.kind not in KINDS:
            raise ValueError(f"--kind {self.kind!r}: accepted: {', '.join(KINDS)}")
        if self.backend == "python" and self.kind == "gpu":
            raise ValueError("--backend python runs ONNX Runtime on the CPU only; use --kind cpu or --backend onnxruntime")
        for flag, value, lo, hi in (("--max-batch", self.max_batch, 1, 4096), ("--instances", self.instances, 1, 256),
                                    ("--threads", self.threads, 1, 256),
                                    ("--max-queue-delay-us", self.max_queue_delay_us, 0, 1_000_000)):
            if not lo <= value <= hi:
                raise ValueError(f"{flag} {value}: must be between {lo} and {hi}")


@dataclass
class RepoResult:
    models: list[Path] = field(default_factory=list)  # the model folders written
    skipped: list[str] = field(default_factory=list)  # what was asked for but cannot be made here, and why


def config_pbtxt(name: str, cfg: ModelConfig, options: RepoOptions, *, platform: str | None = None,
                 kind: str | None = None) -> str:
    """Triton's model configuration (protobuf text format) for one model folder."""
    kind = (kind or options.kind).upper()
    serving = f'platform: "{platform}"' if platform else f'backend: "{options.backend}"'
    # The graph's output is [batch]; Triton's batched models declare per-item dims, so the logit
    # is dims [1] reshaped to [] for the model (documented in Triton's model configuration, "Reshape").
    # The python model returns [b, 1] itself, so it needs no reshape.
    reshape = "" if options.backend == "python" and platform is None else " reshape: { shape: [ ] }"
    lines = [
        f'name: "{name}"',
        serving,
        f"max_batch_size: {options.max_batch}",
        f'input [ {{ name: "{INPUT}" data_type: TYPE_FP32 dims: [ {cfg.window_samples} ] }} ]',
        f'output [ {{ name: "{OUTPUT}" data_type: TYPE_FP32 dims: [ 1 ]{reshape} }} ]',
        f"dynamic_batching {{ max_queue_delay_microseconds: {options.max_queue_delay_us} }}",
        f"instance_group [ {{ count: {options.instances} kind: KIND_{kind} }} ]",
        _parameter(SHA_PARAMETER, str(cfg.onnx_sha256)),
    ]
    if platform is None:
        lines.append(_parameter("intra_op_thread_count", str(options.threads)))
        lines.append(_parameter("inter_op_thread_count", "1"))
    return "\n".join(lines) + "\n"


def _parameter(key: str, value: str) -> str:
    return f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}'


def write_repository(folder: Path, out: Path, options: RepoOptions) -> RepoResult:
    """Write the model folder(s) for checkpoint ``folder`` into repository ``out``."""
    cfg = read_config(folder)
    onnx = verify_file(folder, ONNX_NAME, cfg.onnx_sha256, "onnx_sha256",
                       "this checkpoint needs its model.onnx (save_checkpoint exports it)")
    name = options.name or cfg.architecture
    result = RepoResult()
    target = _fresh_model_dir(out, name)
    (target / "1").mkdir(parents=True)
    shutil.copyfile(onnx, target / "1" / ONNX_NAME)
    if options.backend == "python":
        shutil.copyfile(PYTHON_MODEL, target / "1" / "model.py")
    (target / "config.pbtxt").write_text(config_pbtxt(name, cfg, options), encoding="utf-8")
    result.models.append(target)
    if options.tensorrt:
        reason = _tensorrt_unavailable()
        if reason:
            result.skipped.append(f"TensorRT plan: {reason}")
        else:
            result.models.append(_write_plan(folder, cfg, out, f"{name}_trt", options))
    return result


def _fresh_model_dir(out: Path, name: str) -> Path:
    target = out / name
    if target.exists():
        # Replace only what this tool wrote, never an unrelated folder.
        if not (target / "config.pbtxt").is_file():
            raise EngineError(f"{target} exists and is not a Triton model folder (no config.pbtxt); choose another --out")
        shutil.rmtree(target)
    out.mkdir(parents=True, exist_ok=True)
    return target


def _tensorrt_unavailable() -> str:
    try:
        import tensorrt  # noqa: F401
    except ImportError as e:
        return f"tensorrt is not importable ({e}); skipped"
    try:
        import torch
    except ImportError:
        return "torch is not installed (the plan is built on this machine's GPU); skipped"
    if not torch.cuda.is_available():
        return "no CUDA GPU here to build the plan on; skipped"
    return ""


def _write_plan(folder: Path, cfg: ModelConfig, out: Path, name: str, options: RepoOptions) -> Path:
    import tensorrt as trt
    import torch

    from engines.backends.tensorrt_backend import BuildKey, TensorRTEngine, build_engine, cache_dir, strongly_typed

    onnx = TensorRTEngine._onnx_for(folder, cfg, "fp16", strongly_typed(trt))
    major, minor = torch.cuda.get_device_capability()
    opt = min(16, options.max_batch)
    key = BuildKey(str(cfg.onnx_sha256), trt.__version__, torch.cuda.get_device_name(), f"{major}.{minor}",
                   "fp16", (1, opt, options.max_batch), cfg.window_samples)
    blob = build_engine(onnx, key, options.max_batch, opt, cache_dir() / f"timing-{trt.__version__}-{major}{minor}.cache")
    target = _fresh_model_dir(out, name)
    (target / "1").mkdir(parents=True)
    (target / "1" / "model.plan").write_bytes(blob)
    (target / "config.pbtxt").write_text(config_pbtxt(name, cfg, options, platform="tensorrt_plan", kind="gpu"),
                                         encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engines.triton_repo", description=__doc__.split("\n\n")[0])
    d = RepoOptions()
    ap.add_argument("--model", required=True, help="'specrnet', 'resmax' (shipped weights) or a checkpoint folder")
    ap.add_argument("--out", required=True, type=Path, help="the model repository folder (created if missing)")
    ap.add_argument("--name", default=None, help="Triton model name (default: the checkpoint's architecture)")
    ap.add_argument("--backend", default=d.backend, choices=BACKENDS,
                    help="onnxruntime (production) or python (ONNX Runtime inside Triton's Python backend)")
    ap.add_argument("--max-batch", type=int, default=d.max_batch, help=f"max_batch_size (default {d.max_batch})")
    ap.add_argument("--max-queue-delay-us", type=int, default=d.max_queue_delay_us,
                    help=f"dynamic batching: longest wait for more requests (default {d.max_queue_delay_us})")
    ap.add_argument("--instances", type=int, default=d.instances, help="model instances per device (default 1)")
    ap.add_argument("--kind", default=d.kind, choices=KINDS, help="instance kind (default cpu)")
    ap.add_argument("--threads", type=int, default=d.threads, help="ONNX Runtime threads per instance (default 1)")
    ap.add_argument("--tensorrt", action="store_true", help="also write NAME_trt with a TensorRT plan (needs TensorRT and a GPU)")
    a = ap.parse_args(argv)
    from engines import resolve_model

    try:
        options = RepoOptions(name=a.name, backend=a.backend, max_batch=a.max_batch,
                              max_queue_delay_us=a.max_queue_delay_us, instances=a.instances, kind=a.kind,
                              threads=a.threads, tensorrt=a.tensorrt)
        result = write_repository(resolve_model(a.model), a.out, options)
    except (ValueError, EngineError, MissingExtraError, OSError) as e:  # ValueError covers CheckpointError
        print(f"error: {e}", file=sys.stderr)
        return 2
    for model in result.models:
        print(f"wrote {model}")
    for reason in result.skipped:
        print(f"skipped {reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
