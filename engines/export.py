"""ONNX export of a Detector (front end + network) with a dynamic batch axis."""
from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import torch

from engines.models import Detector, MixedPrecision

INPUT_NAME, OUTPUT_NAME = "waveform", "logit"
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
    example = torch.zeros(2, window_samples)
    batch = torch.export.Dim("batch", min=1, max=4096)
    # The exporter reports progress and harmless notices through logging/warnings; keep the CLI quiet.
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript")]
    levels = [lg.level for lg in quiet]
    try:
        for lg in quiet:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},), opset_version=opset, dynamo=True, verbose=False,
            )
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)
    program.save(str(path), external_data=False)
    return path
