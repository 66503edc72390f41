"""Checkpoints of a vocoder training run: safetensors for tensors, JSON for the rest.

A run folder holds the usable vocoder (``config.json``, ``generator.safetensors``) and what
only resuming needs (``train_state.safetensors``: discriminator and optimizer moments;
``train_state.json``: step, elapsed time, optimizer hyper-parameters). Every file carries the
step, so a folder whose files come from two different steps is refused rather than resumed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import CONFIG_FILE, WEIGHTS_FILE, VocoderConfig, VocoderConfigError, write_json

STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"
# Key prefixes in STATE_TENSORS (distinct, so an optimizer named "discriminator" cannot collide).
DISCRIMINATOR = "model.discriminator"
OPTIMIZER = "optimizer"


class CheckpointError(ValueError):
    """A run folder that cannot be resumed (the message says why)."""


@dataclass
class TrainState:
    step: int  # optimisation steps completed
    elapsed_s: float  # training time over all sessions


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], step: int) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.part")
    # On the CPU whatever device trained them: a checkpoint made on a GPU resumes or vocodes anywhere.
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata={"step": str(step)})
    tmp.replace(path)


def _load_tensors(path: Path, step: int) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        saved = (fh.metadata() or {}).get("step")
        if saved != str(step):
            raise CheckpointError(f"{path} is from step {saved}, {STATE_JSON} says {step}: the checkpoint is torn")
        return {k: fh.get_tensor(k) for k in fh.keys()}


def _flatten_optimizer(prefix: str, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Tensors of an optimizer state_dict into ``tensors``; returns the JSON-able remainder."""
    scalars: dict[str, dict[str, Any]] = {}
    for index, slots in state["state"].items():
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(prefix: str, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            index, key = name[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(index), {})[key] = value
    for index, slots in meta["scalars"].items():
        state.setdefault(int(index), {}).update(slots)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(out: Path, config: VocoderConfig, generator: nn.Module, discriminator: nn.Module,
                    optimizers: dict[str, torch.optim.Optimizer], state: TrainState) -> None:
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / CONFIG_FILE)
    tensors = {f"{DISCRIMINATOR}.{k}": v for k, v in discriminator.state_dict().items()}
    meta = {name: _flatten_optimizer(f"{OPTIMIZER}.{name}", opt.state_dict(), tensors) for name, opt in optimizers.items()}
    _save_tensors(out / STATE_TENSORS, tensors, state.step)
    _save_tensors(out / WEIGHTS_FILE, generator.state_dict(), state.step)
    # Written last: it names the step the other files must carry.
    write_json(out / STATE_JSON, {"step": state.step, "elapsed_s": state.elapsed_s, "optimizers": meta})


def has_checkpoint(out: Path) -> bool:
    return (out / STATE_JSON).is_file()


def load_checkpoint(out: Path, generator: nn.Module, discriminator: nn.Module,
                    optimizers: dict[str, torch.optim.Optimizer]) -> TrainState:
    """Restore a run in place; the modules must be built from the folder's config."""
    try:
        info = json.loads((out / STATE_JSON).read_text(encoding="utf-8"))
        step = int(info["step"])
        generator.load_state_dict(_load_tensors(out / WEIGHTS_FILE, step))
        tensors = _load_tensors(out / STATE_TENSORS, step)
        prefix = f"{DISCRIMINATOR}."
        discriminator.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        for name, opt in optimizers.items():
            opt.load_state_dict(_unflatten_optimizer(f"{OPTIMIZER}.{name}", info["optimizers"][name], tensors))
        return TrainState(step=step, elapsed_s=float(info["elapsed_s"]))
    except (OSError, KeyError, ValueError, RuntimeError, json.JSONDecodeError) as err:
        if isinstance(err, CheckpointError | VocoderConfigError):
            raise
        raise CheckpointError(f"cannot resume from {out}: {err}") from None
