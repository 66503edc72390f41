"""ONNX export of a Detector (front end + network) with a dynamic batch axis, and of a streaming
network's trunk and readout (engines.stream_network)."""
from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from engines.models import Detector, MixedPrecision

INPUT_NAME, OUTPUT_NAME = "waveform", "logit"
FEATURES_NAME, TRUNK_NAME = "features", "trunk"
OPSET = 18


def export_onnx(detector: Detector, path: str | Path, window_samples: int = 64000, opset: int = OPSET,
                mixed_precision: bool = False) -> Path:
    """Write one self-contained .onnx file: input ``waveform`` float32 [batch, window_samples],
    output ``logit`` float32 [batch].

    ``mixed_precision``: the network's weights and activations in float16 with the front end in
    float32 and explicit casts between them, for strongly typed builders (TensorRT 11).

    Uses the torch.export-based exporter; the legacy tracer would bake the 4 MB Fourier basis of
    the 1024-point STFT into the file as a constant, while this graph builds it at load time.
    """
    path = Path(path)
    model = detector.eval()
    if mixed_precision:
        model = MixedPrecision(copy.deepcopy(detector)).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    return _export(model, torch.zeros(2, window_samples), path, INPUT_NAME, OUTPUT_NAME, {0: batch}, opset)


def export_stream(network: Any, trunk_path: str | Path, readout_path: str | Path, geometry: dict[str, int],
                  n_features: int, opset: int = OPSET) -> None:
    """Write a streaming network's two graphs (``engines.models.specrnet_stream``):
    ``trunk_path``: ``features`` float32 [batch, 1, n_features, time] -> ``trunk`` [batch, channels,
    (time - context) / stride + 1], time any length from ``context`` on (a hop's tile or more);
    ``readout_path``: ``trunk`` [batch, channels, frames] -> ``logit`` [batch]."""
    network = network.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    g = geometry
    # Any input length: the per-hop tile follows the run's hop; trunk frame j reads the same frames either way.
    time = torch.export.Dim("time", min=g["context"], max=4096)
    example = torch.zeros(2, 1, n_features, g["context"] + g["stride"] * (g["frames"] - 1))
    _export(network.trunk, example, trunk_path, FEATURES_NAME, TRUNK_NAME, {0: batch, 3: time}, opset)
    _export(network.readout, torch.zeros(2, g["channels"], g["frames"]), readout_path, TRUNK_NAME, OUTPUT_NAME,
            {0: batch}, opset)


def _export(model: torch.nn.Module, example: torch.Tensor, path: str | Path, input_name: str, output_name: str,
            dims: dict[int, Any], opset: int) -> Path:
    """One self-contained .onnx file of ``model`` on inputs like ``example`` with dynamic ``dims``."""
    path = Path(path)
    # The exporter reports progress and harmless notices through logging/warnings; keep the CLI quiet.
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript")]
    levels = [lg.level for lg in quiet]
    try:
        for lg in quiet:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, (example,), input_names=[input_name], output_names=[output_name],
                dynamic_shapes=(dims,), opset_version=opset, dynamo=True, verbose=False,
            )
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)
    program.save(str(path), external_data=False)
    return path
