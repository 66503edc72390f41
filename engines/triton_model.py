"""A Triton Python-backend model that runs the checkpoint's ONNX graph with ONNX Runtime.

``python -m engines.triton_repo --backend python`` copies this file into the repository as
``model.py``. It is for tritonservers built without the onnxruntime backend, such as the one
bundled with PyTriton (Python backend only); production servers use ``--backend onnxruntime``.
It runs inside Triton's Python stub, so it imports only numpy, onnxruntime and Triton's
``triton_python_backend_utils``, never this project.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

# Triton's stub embeds its interpreter in isolated mode: PYTHONPATH reaches the environment but not
# sys.path. Honour it here, so numpy and onnxruntime can come from a virtual environment.
for _entry in reversed([p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]):
    if _entry not in sys.path:
        sys.path.insert(1, _entry)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402 - provided by the stub at run time

INPUT, OUTPUT = "waveform", "logit"
# ONNX Runtime's CPU arena keeps the high-water mark of its largest run (~17 MB per SpecRNet
# window), so a dynamic batch is run in pieces of this many windows (as the in-process engine does).
RUN_WINDOWS = 4


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        opts = ort.SessionOptions()
        # One thread per instance: Triton's instance_group count is how this tier uses more cores.
        opts.intra_op_num_threads = int(params.get("intra_op_thread_count", "1") or 1)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.enable_mem_pattern = False
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])

    def execute(self, requests: list[Any]) -> list[Any]:
        # Dynamic batching hands several requests at once: one ONNX Runtime pass over all of them.
        try:
            # DLPack both ways, not as_numpy()/Tensor(name, array): the stub's pybind11 reads numpy's
            # dtype struct directly, whose layout changed in numpy 2, so with numpy 2 those calls see
            # 0-byte items (inputs arrive as garbage, outputs as empty tensors). DLPack has no such tie.
            arrays = [np.from_dlpack(pb_utils.get_input_tensor_by_name(r, INPUT)) for r in requests]
            x = np.ascontiguousarray(np.concatenate(arrays), dtype=np.float32)
            logits = np.concatenate([self.session.run(None, {INPUT: x[i : i + RUN_WINDOWS]})[0].reshape(-1)
                                     for i in range(0, len(x), RUN_WINDOWS)])
        except Exception as e:  # noqa: BLE001 - every request of the batch gets the error
            error = pb_utils.TritonError(f"{type(e).__name__}: {e}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        out, start = [], 0
        for a in arrays:
            part = logits[start : start + len(a)].reshape(-1, 1).astype(np.float32)
            out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor.from_dlpack(OUTPUT, part)]))
            start += len(a)
        return out
