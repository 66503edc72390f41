"""Resumable training state without pickle: tensors in ``state.safetensors``, the rest in ``state.json``.

Model weights and buffers are stored under ``model.``, the optimizer's per-parameter tensors
(AdamW: step, exp_avg, exp_avg_sq) under ``optim.<param index>.<name>``, the CPU RNG state under
``rng.torch``. The optimizer's param_groups (lr, betas ...) and any non-tensor state go to JSON,
with the epoch counters, best score and history. Both files carry the epoch; a mismatch (a crash
between the two writes) is refused.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

__all__ = ["ResumeState", "ResumeError", "save_state", "load_state", "read_state", "STATE_TENSORS", "STATE_JSON"]

STATE_TENSORS, STATE_JSON = "state.safetensors", "state.json"


class ResumeError(ValueError):
    """The saved state cannot be resumed (missing, damaged, or from a different setup)."""


@dataclass
class ResumeState:
    epoch: int  # epochs completed
    global_step: int
    best_eer: float | None
    best_epoch: int | None
    bad_epochs: int
    lr_scale: float  # plateau scheduler's accumulated factor
    history: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    scaler: dict[str, Any] | None = None
    finished: bool = False


def _optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    groups = []
    for g in meta["param_groups"]:
        # JSON has no tuples; torch's optimizers expect e.g. betas as a pair.
        groups.append({k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()})
    opt.load_state_dict({"state": state, "param_groups": groups})


def _write_atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_state(folder: str | os.PathLike[str], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               state: ResumeState) -> Path:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_to_flat(optimizer)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"epoch": str(state.epoch)}
    _write_atomic(out / STATE_TENSORS, lambda p: save_file(tensors, str(p), metadata=meta))
    doc = {**state.__dict__, "optimizer": opt_meta}
    _write_atomic(out / STATE_JSON, lambda p: p.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8"))
    return out


def _read_json(folder: Path) -> tuple[ResumeState, dict[str, Any] | None]:
    jpath = folder / STATE_JSON
    for p in (folder / STATE_TENSORS, jpath):
        if not p.is_file():
            raise ResumeError(f"cannot resume: {p} is missing (was this run started with the same --out?)")
    try:
        doc = json.loads(jpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResumeError(f"cannot resume from {jpath}: damaged state ({e})") from None
    if not isinstance(doc, dict):
        raise ResumeError(f"cannot resume from {jpath}: expected a JSON object")
    opt_meta = doc.pop("optimizer", None)
    try:
        return ResumeState(**doc), opt_meta
    except TypeError as e:
        raise ResumeError(f"cannot resume from {jpath}: unexpected content ({e})") from None


def read_state(folder: str | os.PathLike[str]) -> ResumeState:
    """The counters and config of a saved run, without touching any model (to check it first)."""
    return _read_json(Path(folder))[0]


def load_state(folder: str | os.PathLike[str], model: torch.nn.Module,
               optimizer: torch.optim.Optimizer) -> ResumeState:
    """Restore model, optimizer and RNG in place; return the counters to continue from."""
    src = Path(folder)
    state, opt_meta = _read_json(src)
    tpath = src / STATE_TENSORS
    try:
        tensors = load_file(str(tpath))
        with safe_open(str(tpath), framework="pt") as f:
            meta = f.metadata() or {}
    except (OSError, SafetensorError) as e:
        raise ResumeError(f"cannot resume from {tpath}: damaged state ({e})") from None
    if meta.get("epoch") != str(state.epoch):
        raise ResumeError(f"cannot resume from {src}: {STATE_TENSORS} is from epoch {meta.get('epoch')}, "
                          f"{STATE_JSON} from epoch {state.epoch} (interrupted while saving)")
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_sd)
    except RuntimeError as e:
        raise ResumeError(f"cannot resume from {src}: the saved model does not fit this architecture ({e})") from None
    if opt_meta is None:
        raise ResumeError(f"cannot resume from {src / STATE_JSON}: no optimizer section")
    _optimizer_from_flat(optimizer, {k: v for k, v in tensors.items() if k.startswith("optim.")}, opt_meta)
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    return state
