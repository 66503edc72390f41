"""Network-only (and front-end-only) views of a checkpoint's ONNX graphs: ``python -m engines.split``.

    python -m engines.split --model specrnet     # writes network.onnx (+ network.int8.onnx)

The streaming front end (``engines.hop_frontend``) computes each window's features itself, so it
needs the network alone: ``features`` float32 [batch, 1, n_features, frames] -> ``logit`` [batch].
The view is cut out of the exported whole graph instead of tracing the network a second time:
it holds the same nodes, and its weights are ONNX external data pointing at the bytes of the same
tensors inside ``model.onnx`` (or ``model.int8.onnx``). So the split path runs exactly the whole
graph's network, int8 quantization included, and a view costs ~40 KB, not a second copy of the
weights (the shipped folders stay under 5 MB). model.json records each view's sha256 and that of
the graph it reads; both files are verified at load.

An offline tool: it needs the ``onnx`` package (extra ``quantize``), as ``engines.quantize`` does.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from engines.checkpoint import (
    INT8_NAME,
    NETWORK_INT8_NAME,
    NETWORK_NAME,
    ONNX_NAME,
    read_config,
    sha256_file,
    verify_file,
    verify_int8,
    write_config,
)
from engines.errors import EngineError, MissingExtraError

__all__ = ["FEATURES_NAME", "SplitError", "add_network_views", "frontend_nodes", "frontend_view", "main",
           "network_view", "write_view"]

WAVEFORM_NAME, LOGIT_NAME, FEATURES_NAME = "waveform", "logit", "features"
# Tensors this small are copied into the view: offsets into the source would save nothing.
INLINE_BYTES = 1024


class SplitError(ValueError):
    """The graph cannot be cut into front end and network (not an engines.export graph)."""


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise MissingExtraError("onnx", "quantize", "python -m engines.split") from None
    return onnx


def frontend_nodes(graph: Any) -> list[str]:
    """Names of the nodes that compute the log spectrogram: the first ``Log`` fed by the waveform
    and everything it depends on (Fourier basis, STFT conv, power, filterbank matmul)."""
    producer = {out: node for node in graph.node for out in node.output}
    for node in graph.node:  # ONNX graphs are topologically sorted
        if node.op_type != "Log":
            continue
        seen: dict[str, Any] = {}
        stack = [node]
        while stack:
            n = stack.pop()
            if n.name in seen:
                continue
            seen[n.name] = n
            stack += [producer[t] for t in n.input if t in producer]
        if any(WAVEFORM_NAME in n.input for n in seen.values()):
            return list(seen)
    raise SplitError(f"no Log node fed by '{WAVEFORM_NAME}': cannot tell the front end from the network")


def _features_tensor(graph: Any) -> str:
    """The network's input inside the whole graph: the front end's log spectrogram with its
    channel axis added (FrontEnd's final ``unsqueeze(1)``)."""
    names = set(frontend_nodes(graph))
    log = next(n for n in graph.node if n.name in names and n.op_type == "Log")
    users = [n for n in graph.node if log.output[0] in n.input]
    if len(users) != 1 or users[0].op_type != "Unsqueeze":
        raise SplitError(f"the front end's Log feeds {[n.op_type for n in users]}, expected one Unsqueeze")
    return users[0].output[0]


def _needed(graph: Any, outputs: list[str], stop: str) -> list[Any]:
    """The nodes that ``outputs`` depend on, not looking past tensor ``stop``, in graph order."""
    producer = {out: node for node in graph.node for out in node.output}
    seen: set[str] = set()
    stack = [producer[t] for t in outputs]
    while stack:
        n = stack.pop()
        if n.name not in seen:
            seen.add(n.name)
            stack += [producer[t] for t in n.input if t in producer and t != stop]
    return [n for n in graph.node if n.name in seen]


def _external(tensor: Any, source: bytes, location: str, onnx: Any) -> Any:
    """A copy of ``tensor`` whose data is read from ``location`` at the offset where its bytes lie."""
    out = onnx.TensorProto()
    out.CopyFrom(tensor)
    if len(tensor.raw_data) < INLINE_BYTES:
        return out
    offset = source.find(tensor.raw_data)
    if offset < 0:  # cannot happen for a tensor of that file; checked so a bad offset is never written
        raise SplitError(f"tensor {tensor.name}'s bytes are not in {location}")
    out.ClearField("raw_data")
    out.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(tensor.raw_data)))):
        entry = out.external_data.add()
        entry.key, entry.value = key, value
    return out


def _view(source: Path, target: Path, inputs: list[Any], outputs: list[Any], nodes: list[Any], model: Any,
          onnx: Any) -> None:
    """Write a model of ``nodes`` whose initializers are external data inside ``source`` (same folder)."""
    if source.parent.resolve() != target.parent.resolve():
        raise SplitError(f"a view must sit next to the graph it reads ({source.parent}), not in {target.parent}")
    blob = source.read_bytes()
    used = {t for n in nodes for t in n.input}
    inits = [_external(t, blob, source.name, onnx) for t in model.graph.initializer if t.name in used]
    for n in nodes:
        del n.metadata_props[:]  # the exporter's stack traces: most of a view's bytes otherwise
    for o in outputs:
        del o.metadata_props[:]
    graph = onnx.helper.make_graph(nodes, target.stem, inputs, outputs, inits)
    view = onnx.helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    onnx.save(view, str(target))


def _typed(model: Any, name: str, onnx: Any) -> Any:
    """The value info (type and shape) of tensor ``name``, inferred if the file does not carry it."""
    inferred = onnx.shape_inference.infer_shapes(model)
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        if info.name == name:
            return info
    raise SplitError(f"the shape of {name} cannot be inferred")


def network_view(source: Path, target: Path) -> None:
    """Write ``target``: the network of whole graph ``source`` with input ``features``."""
    onnx = _onnx()
    model = onnx.load(str(source))
    graph = model.graph
    cut = _features_tensor(graph)
    features = onnx.helper.make_tensor_value_info(FEATURES_NAME, onnx.TensorProto.FLOAT, None)
    features.type.CopyFrom(_typed(model, cut, onnx).type)
    nodes = _needed(graph, [o.name for o in graph.output], stop=cut)
    for n in nodes:
        if WAVEFORM_NAME in n.input:
            # The exporter reads the batch size off the waveform (the GRU's zero state); the
            # features carry the same batch axis. Anything else read from the waveform cannot move.
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            if n.op_type != "Shape" or attrs.get("start", 0) != 0 or attrs.get("end") != 1:
                raise SplitError(f"network node {n.name} ({n.op_type}) reads the waveform itself")
        n.input[:] = [FEATURES_NAME if t in (cut, WAVEFORM_NAME) else t for t in n.input]
    _view(source, target, [features], list(graph.output), nodes, model, onnx)


def frontend_view(source: Path, target: Path) -> None:
    """Write ``target``: the front end of whole graph ``source``, ``waveform`` -> ``features``.
    Not part of a checkpoint: tools/hop_bench.py times the graph's front end alone with it."""
    onnx = _onnx()
    model = onnx.load(str(source))
    cut = _features_tensor(model.graph)
    nodes = _needed(model.graph, [cut], stop="")
    for n in nodes:
        n.output[:] = [FEATURES_NAME if t == cut else t for t in n.output]
    out = onnx.helper.make_tensor_value_info(FEATURES_NAME, onnx.TensorProto.FLOAT, None)
    out.type.CopyFrom(_typed(model, cut, onnx).type)
    waveform = next(i for i in model.graph.input if i.name == WAVEFORM_NAME)
    _view(source, target, [waveform], [out], nodes, model, onnx)


def write_view(folder: Path, source: str, target: str) -> dict[str, str]:
    """Write ``folder/target`` as the network view of ``folder/source``; its model.json record."""
    network_view(folder / source, folder / target)
    return {"sha256": sha256_file(folder / target), "source_sha256": sha256_file(folder / source)}


def add_network_views(folder: Path) -> list[str]:
    """Write the network views of a checkpoint's model.onnx and, if it has one, model.int8.onnx
    (both verified first) and record them in model.json; returns the files written."""
    cfg = read_config(folder)
    verify_file(folder, ONNX_NAME, cfg.onnx_sha256, "onnx_sha256")
    cfg.network = write_view(folder, ONNX_NAME, NETWORK_NAME)
    written = [NETWORK_NAME]
    if cfg.int8 is not None:
        verify_int8(folder, cfg)
        cfg.int8["network"] = write_view(folder, INT8_NAME, NETWORK_INT8_NAME)
        written.append(NETWORK_INT8_NAME)
    write_config(folder, cfg)
    return written


def main(argv: list[str] | None = None) -> int:
    from engines import resolve_model

    ap = argparse.ArgumentParser(prog="python -m engines.split", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="'specrnet', 'resmax' (shipped weights) or a checkpoint folder")
    a = ap.parse_args(argv)
    try:
        folder = resolve_model(a.model)
        written = add_network_views(folder)
    except (ValueError, EngineError, MissingExtraError) as e:  # ValueError covers SplitError, CheckpointError
        print(f"error: {e}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{name} ({(folder / name).stat().st_size / 1e3:.0f} KB)" for name in written)
    print(f"wrote {sizes} in {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
