"""Checkpoints that resume exactly: trainable weights, optimizer, scheduler, RNG states, data position."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tuneloop.models.run_folder import RunFolder

STATE = "state.json"


def save_checkpoint(folder: Path, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any]) -> Path:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    save_file(weights, tmp / "trainable.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}, tmp / "rng.pt")
    (tmp / STATE).write_text(json.dumps(state, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def load_checkpoint(folder: Path, model: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    weights = load_file(folder / "trainable.safetensors")
    params = dict(model.named_parameters())
    missing = [name for name, p in params.items() if p.requires_grad and name not in weights]
    if missing:
        raise ValueError(f"checkpoint {folder} does not match the model: no weights for {missing[:3]}")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=False))
    rng = torch.load(folder / "rng.pt", weights_only=False)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return json.loads((folder / STATE).read_text())


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = RunFolder(run_dir).checkpoints
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and (p / STATE).exists()), key=lambda p: p.name)


def prune_checkpoints(run_dir: Path, keep_last: int, best: Path | None) -> None:
    for old in list_checkpoints(run_dir)[:-keep_last]:
        if best is None or old.resolve() != best.resolve():
            shutil.rmtree(old, ignore_errors=True)
