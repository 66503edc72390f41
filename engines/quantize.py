"""Static int8 quantization of a checkpoint's network: ``python -m engines.quantize``.

    python -m engines.quantize --model specrnet --calibration ../shared/data/bonafide corpus/manifest.csv

Writes ``model.int8.onnx`` next to ``model.onnx`` and records its sha256 and how it was calibrated in
model.json (key ``int8``); ``engines.load(model, engine="onnx-int8")`` runs it. Also writes its network
alone, ``network.int8.onnx`` (``engines.split``), for the streaming front end. ONNX Runtime static
quantization in QDQ format with per-channel weights, calibrated (min/max) on windows of real audio.

Only the network is quantized. The front end (STFT conv on the waveform, power, mel matmul, log)
stays float32: the power spectrum spans far more than 8 bits of dynamic range, so quantizing the
waveform or the STFT output wipes out quiet bands. Quantization starts after the log features.
Within the network only the weighted ops (Conv, Gemm, MatMul) are quantized, and not the convs
with one input channel; the measurements behind these choices are in README.md (int8).

An offline tool: it needs the ``onnx`` package (extra ``quantize``) and is never imported by an engine.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from engines import resolve_model
from engines.audio_io import AudioFileError, read_mono
from engines.checkpoint import (
    INT8_NAME,
    NETWORK_INT8_NAME,
    ONNX_NAME,
    read_config,
    sha256_file,
    verify_file,
    write_config,
)
from engines.errors import EngineError, MissingExtraError
from engines.split import frontend_nodes, write_view

__all__ = ["QuantizeOptions", "QuantizeError", "calibration_windows", "frontend_nodes", "quantize_checkpoint", "main"]

AUDIO_SUFFIXES = frozenset(f".{ext.lower()}" for ext in sf.available_formats()) | {".mp3", ".opus"}
INPUT_NAME = "waveform"
# Residual adds, attention gates, BatchNorm and activations stay float: quantizing them too cost
# accuracy (SpecRNet max |dp| 0.013 -> 0.07-0.08 on 64 corpus windows) and gained no speed.
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul"]


class QuantizeError(ValueError):
    """Quantization cannot proceed (no usable calibration audio, an unexpected graph)."""


@dataclass(frozen=True)
class QuantizeOptions:
    windows: int = 200  # calibration windows, shared equally between the sources
    seed: int = 0  # picks the files, the window offsets and the gains
    # Each window is scaled by a gain drawn uniformly in dB from this range: live input is often
    # much quieter than the corpora, and activations outside the calibrated ranges saturate.
    gain_db: tuple[float, float] = (-40.0, 0.0)
    # uint8 activations and int8 weights: int8 activations scored the same and ran slightly slower,
    # uint8 weights ran at float32 speed (0.95-1.09x) and scored worse on SpecRNet (README, int8).
    activations: str = "uint8"
    weights: str = "int8"
    batch: int = 8  # windows per calibration run

    def __post_init__(self) -> None:
        if self.windows < 1 or self.batch < 1:
            raise ValueError(f"windows ({self.windows}) and batch ({self.batch}) must be >= 1")
        if not self.gain_db[0] <= self.gain_db[1]:
            raise ValueError(f"gain_db {self.gain_db} must be (low, high) with low <= high")
        for name, value in (("activations", self.activations), ("weights", self.weights)):
            if value not in ("int8", "uint8"):
                raise ValueError(f"{name} {value!r} is not supported; accepted: int8, uint8")


# ----------------------------------------------------------------------------- calibration audio


def _source_files(source: Path) -> list[tuple[Path, str | None]]:
    """(file, label or None) of a folder (audio files, recursively) or a manifest CSV
    (path,label,...; only the train split when it has a split column, so eval stays unseen)."""
    if source.is_dir():
        return [(p, None) for p in sorted(source.rglob("*")) if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()]
    if source.suffix.lower() != ".csv" or not source.is_file():
        raise QuantizeError(f"calibration source {source} is neither a folder of audio files nor a manifest .csv")
    with open(source, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "path" not in rows[0]:
        raise QuantizeError(f"{source}: a manifest needs a header with a 'path' column and at least one row")
    split = "split" if "split" in rows[0] else "subset" if "subset" in rows[0] else None
    if split is not None:
        rows = [r for r in rows if r[split] == "train"]
    return [(source.parent / r["path"], r.get("label")) for r in rows]


def _read_or_none(path: Path, sample_rate: int) -> np.ndarray | None:
    """Mono float32 at ``sample_rate``, or None for a file that cannot be used (skipped)."""
    try:
        return read_mono(path, sample_rate)
    except AudioFileError:
        return None


def _source_windows(source: Path, count: int, window: int, sample_rate: int, gain_db: tuple[float, float],
                    rng: np.random.Generator) -> tuple[list[np.ndarray], dict[str, Any]]:
    """``count`` windows from one source: files in a seeded random order, one window at a random
    offset and gain per file (a short file is tiled to a window), going round again if files run out."""
    files = _source_files(source)
    if not files:
        raise QuantizeError(f"calibration source {source} holds no audio files")
    order = rng.permutation(len(files))
    out: list[np.ndarray] = []
    labels: dict[str, int] = {}
    unreadable: set[int] = set()
    i = 0
    while len(out) < count:
        if len(unreadable) == len(files):
            raise QuantizeError(f"calibration source {source}: none of its {len(files)} files could be decoded")
        k = int(order[i % len(files)])
        i += 1
        if k in unreadable:
            continue
        audio = _read_or_none(files[k][0], sample_rate)
        if audio is None:
            unreadable.add(k)
            continue
        if audio.size <= window:
            picked = np.resize(audio, window)
        else:
            start = int(rng.integers(0, audio.size - window + 1))
            picked = audio[start : start + window]
        out.append(picked * np.float32(10.0 ** (rng.uniform(*gain_db) / 20.0)))
        label = files[k][1] or "unlabelled"
        labels[label] = labels.get(label, 0) + 1
    desc = {"path": str(source), "files": len(files), "windows": count, "labels": dict(sorted(labels.items())),
            "unreadable": len(unreadable)}
    return out, desc


def calibration_windows(sources: list[Path], count: int, window: int, sample_rate: int, seed: int,
                        gain_db: tuple[float, float]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """[count, window] float32 windows shared equally between ``sources``, deterministic given ``seed``."""
    if not sources:
        raise QuantizeError("give at least one calibration source (a folder of audio files or a manifest CSV)")
    windows: list[np.ndarray] = []
    described: list[dict[str, Any]] = []
    for index, source in enumerate(sources):
        share = count // len(sources) + (1 if index < count % len(sources) else 0)
        if share == 0:
            continue
        got, desc = _source_windows(Path(source), share, window, sample_rate, gain_db,
                                    np.random.default_rng([seed, index]))
        windows += got
        described.append(desc)
    return np.stack(windows).astype(np.float32, copy=False), described


# ----------------------------------------------------------------------------- graph


def single_channel_convs(graph: Any) -> list[str]:
    """Convs with one input channel (the network's first layer): with only kh*kw products per
    output an int8 GEMM saves nothing, while quantizing their large outputs costs (ResMax's 5x5
    stem: 3.5 ms in float32, 8.0 ms in int8)."""
    weights = {t.name: t for t in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "Conv" and n.input[1] in weights
            and len(weights[n.input[1]].dims) > 1 and weights[n.input[1]].dims[1] == 1]


def narrow_index_tables(model: Any, onnx: Any) -> None:
    """Store int64 ``Mod`` operands as int32 where that is exact and the result is only cast.

    The exporter folds the Fourier basis's phase index (k * n, before ``mod n_fft``) into an int64
    table: 822 KB for SpecRNet. int32 holds it exactly, so the basis comes out bit-identical, and
    the int8 file stays small enough for a shipped model folder to stay under 5 MB.
    """
    graph = model.graph
    tables = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in graph.node:
        ints = [tables.get(name) for name in node.input]
        if (node.op_type != "Mod" or any(t is None or t.data_type != onnx.TensorProto.INT64 for t in ints)
                or any(c.op_type != "Cast" for c in consumers.get(node.output[0], []))):
            continue
        values = [onnx.numpy_helper.to_array(t) for t in ints]
        if any(np.abs(v).max(initial=0) >= 2**31 for v in values):
            continue
        for i, (t, v) in enumerate(zip(ints, values)):
            narrow = onnx.numpy_helper.from_array(v.astype(np.int32), f"{t.name}_int32")
            graph.initializer.append(narrow)
            node.input[i] = narrow.name
            if len(consumers[t.name]) == 1:
                graph.initializer.remove(t)
        for info in list(graph.value_info):
            if info.name == node.output[0]:
                graph.value_info.remove(info)


def _check_names(graph: Any) -> None:
    names = [n.name for n in graph.node]
    if "" in names or len(set(names)) != len(names):
        raise QuantizeError("the graph has unnamed or duplicate node names; re-export model.onnx with engines.export")


def _quantized_frontend(graph: Any, float_nodes: list[str]) -> list[str]:
    """Front-end nodes that read a dequantized tensor (must be none)."""
    producer = {out: node.op_type for node in graph.node for out in node.output}
    wanted = set(float_nodes)
    return [n.name for n in graph.node if n.name in wanted
            and any(producer.get(t) == "DequantizeLinear" for t in n.input)]


# ----------------------------------------------------------------------------- quantization


def _import_quantization() -> tuple[Any, Any]:
    try:
        import onnx
        from onnxruntime import quantization
    except ImportError:
        raise MissingExtraError("onnx", "quantize", "python -m engines.quantize") from None
    return onnx, quantization


def quantize_checkpoint(folder: Path, sources: list[Path], options: QuantizeOptions) -> dict[str, Any]:
    """Write ``folder/model.int8.onnx`` and its record in model.json; returns the record."""
    import onnxruntime as ort

    onnx, q = _import_quantization()
    cfg = read_config(folder)
    fp32 = verify_file(folder, ONNX_NAME, cfg.onnx_sha256, "onnx_sha256")
    model = onnx.load(str(fp32))
    _check_names(model.graph)
    float_nodes = frontend_nodes(model.graph)
    excluded = float_nodes + single_channel_convs(model.graph)
    windows, described = calibration_windows(sources, options.windows, cfg.window_samples, cfg.sample_rate,
                                             options.seed, options.gain_db)

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(range(0, len(windows), options.batch))

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self._batches, None)
            return None if start is None else {INPUT_NAME: windows[start : start + options.batch]}

    qtype = {"int8": q.QuantType.QInt8, "uint8": q.QuantType.QUInt8}
    tmp = folder / f".{INT8_NAME}.tmp"
    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.ERROR)  # the quantizer logs notices (pre-processing advice) as warnings
        q.quantize_static(str(fp32), str(tmp), Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                          activation_type=qtype[options.activations], weight_type=qtype[options.weights],
                          op_types_to_quantize=QUANTIZED_OPS, nodes_to_exclude=excluded,
                          calibrate_method=q.CalibrationMethod.MinMax)
        quantized = onnx.load(str(tmp))
        leaked = _quantized_frontend(quantized.graph, float_nodes)
        if leaked:
            raise QuantizeError(f"front-end node {leaked[0]} would read int8 data; the front end must stay float32")
        narrow_index_tables(quantized, onnx)
        onnx.save(quantized, str(tmp))
        agreement = _agreement(str(fp32), str(tmp), windows, ort)
        os.replace(tmp, folder / INT8_NAME)
    finally:
        root.setLevel(level)
        tmp.unlink(missing_ok=True)
    cfg.int8 = {
        "sha256": sha256_file(folder / INT8_NAME),
        "onnx_sha256": cfg.onnx_sha256,
        "calibration": {"windows": len(windows), "seed": options.seed, "gain_db": list(options.gain_db),
                        "sources": described, "method": "MinMax", "onnxruntime": ort.__version__},
        "quantization": {"format": "QDQ", "per_channel": True, "activations": options.activations,
                         "weights": options.weights, "ops": QUANTIZED_OPS, "float32_frontend_nodes": len(float_nodes),
                         "float32_single_channel_convs": len(excluded) - len(float_nodes)},
        "calibration_agreement": agreement,
        # The split path's int8 network: this file's network nodes, reading its int8 weights.
        "network": write_view(folder, INT8_NAME, NETWORK_INT8_NAME),
    }
    write_config(folder, cfg)
    return cfg.int8


def _agreement(fp32: str, int8: str, windows: np.ndarray, ort: Any) -> dict[str, float]:
    """How the int8 logits track the float32 ones on the calibration windows (in-sample)."""
    logits = []
    for path in (fp32, int8):
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        logits.append(np.concatenate([session.run(None, {INPUT_NAME: windows[i : i + 16]})[0].reshape(-1)
                                      for i in range(0, len(windows), 16)]).astype(np.float64))
    p = [1.0 / (1.0 + np.exp(-z)) for z in logits]
    corr = float(np.corrcoef(logits[0], logits[1])[0, 1]) if len(windows) > 1 else 1.0
    return {"logit_correlation": round(corr, 6), "max_abs_prob_diff": round(float(np.max(np.abs(p[0] - p[1]))), 6),
            "mean_abs_logit_diff": round(float(np.mean(np.abs(logits[0] - logits[1]))), 6)}


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engines.quantize", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="'specrnet', 'resmax' (shipped weights) or a checkpoint folder")
    ap.add_argument("--calibration", required=True, nargs="+", type=Path, metavar="PATH",
                    help="folders of audio files and/or manifest CSVs (path,label,...; train split only if it has one)")
    defaults = QuantizeOptions()
    ap.add_argument("--windows", type=int, default=defaults.windows, help="calibration windows (default 200)")
    ap.add_argument("--seed", type=int, default=defaults.seed, help="picks files, window offsets and gains (default 0)")
    ap.add_argument("--gain-db", type=float, nargs=2, default=defaults.gain_db, metavar=("LOW", "HIGH"),
                    help="gain range in dB applied to the calibration windows (default -40 0)")
    ap.add_argument("--activations", default=defaults.activations, choices=("uint8", "int8"),
                    help="activation type (default uint8)")
    ap.add_argument("--weights", default=defaults.weights, choices=("int8", "uint8"), help="weight type (default int8)")
    a = ap.parse_args(argv)
    try:
        options = QuantizeOptions(windows=a.windows, seed=a.seed, gain_db=tuple(a.gain_db), activations=a.activations,
                                  weights=a.weights)
        folder = resolve_model(a.model)
        record = quantize_checkpoint(folder, a.calibration, options)
    except (ValueError, EngineError, MissingExtraError) as e:  # ValueError covers QuantizeError, CheckpointError
        print(f"error: {e}", file=sys.stderr)
        return 2
    agree = record["calibration_agreement"]
    print(f"wrote {folder / INT8_NAME} ({(folder / INT8_NAME).stat().st_size / 1e6:.2f} MB) from "
          f"{record['calibration']['windows']} calibration windows; on them int8 vs float32: logit correlation "
          f"{agree['logit_correlation']:.4f}, max |dp| {agree['max_abs_prob_diff']:.4f}")
    print(json.dumps(record["calibration"]["sources"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
