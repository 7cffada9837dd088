"""Hyperparameter search on the shipped support tickets, measured side by side in one run:

1. a 12-trial TPE search without pruning against the same search with the median pruner: the best metric found
   and the wall time of each;
2. a 4-point grid on 1 worker against the same grid on 2 workers: the wall time of each (the machine's cores split
   between the workers: OMP_NUM_THREADS = cores / workers).

Each search is `tuneloop search` in a process of its own, with its own home, a head on `minilm-l6` (method
classify) trained on 80% of the tickets and evaluated on the other 20% every 10 steps.

    .venv/bin/python benchmarks/search.py [--trials 12] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TICKETS = ROOT / "src" / "tuneloop" / "examples" / "support_tickets.jsonl"
TUNELOOP = Path(sys.executable).parent / "tuneloop"


def split(folder: Path) -> tuple[Path, Path]:
    """The tickets split 80/20 by `tuneloop data split` (seed 0): train and validation."""
    out = folder / "split"
    subprocess.run([str(TUNELOOP), "data", "split", str(TICKETS), "-o", str(out), "--ratios", "0.8,0.2"],
                   check=True, capture_output=True, env={**os.environ, "TUNELOOP_HOME": str(folder / "home")})
    return out / "train.jsonl", out / "test.jsonl"


def search(folder: Path, name: str, space: dict, *, sampler: str, pruner: str, trials: int, workers: int,
           cores: int, train: Path, valid: Path, epochs: int) -> dict:
    run = folder / name
    run.mkdir()
    recipe = {"model": "minilm-l6", "method": "classify", "data": {"train": str(train), "validation": str(valid)},
              "hyperparameters": {"epochs": epochs, "batch_size": 16},
              "evaluation": {"every_steps": 10, "each_epoch": False}, "checkpoints": {"each_epoch": False}}
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (run / "space.yaml").write_text(yaml.safe_dump(space))
    env = {**os.environ, "TUNELOOP_HOME": str(run / "home"), "TUNELOOP_OFFLINE": "1",
           "OMP_NUM_THREADS": str(max(1, cores // workers)), "MKL_NUM_THREADS": str(max(1, cores // workers))}
    started = time.perf_counter()
    done = subprocess.run([str(TUNELOOP), "search", str(run / "recipe.yaml"), "--space",
                           str(run / "space.yaml"), "--sampler", sampler, "--pruner", pruner, "--trials", str(trials),
                           "--workers", str(workers), "--metric", "eval_accuracy", "--json"],
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    view = json.loads(done.stdout[done.stdout.index("{"):])
    states = [t["state"] for t in view["trial_rows"]]
    return {"name": name, "seconds": seconds, "best": view["best"]["value"] if view["best"] else None,
            "best_params": view["best"]["params"] if view["best"] else None,
            "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"), "failed": states.count("FAIL"),
            "trial_seconds": sum(t["seconds"] or 0 for t in view["trial_rows"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    cores = os.cpu_count() or 2
    space = {"hyperparameters.learning_rate": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
             "hyperparameters.head_learning_rate": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
             "hyperparameters.weight_decay": [0.0, 0.01, 0.1]}
    grid_space = {"hyperparameters.learning_rate": [1e-5, 3e-5, 1e-4, 3e-4]}
    with tempfile.TemporaryDirectory(prefix="tuneloop-search-bench-") as tmp:
        folder = Path(tmp)
        train, valid = split(folder)
        common = {"train": train, "valid": valid, "epochs": args.epochs, "cores": cores}
        rows = [search(folder, "tpe", space, sampler="tpe", pruner="none", trials=args.trials, workers=1, **common),
                search(folder, "tpe+median", space, sampler="tpe", pruner="median", trials=args.trials, workers=1,
                       **common),
                search(folder, "grid-1-worker", grid_space, sampler="grid", pruner="none", trials=4, workers=1,
                       **common),
                search(folder, "grid-2-workers", grid_space, sampler="grid", pruner="none", trials=4, workers=2,
                       **common)]
    print(f"{'search':<16} {'wall s':>8} {'best eval_accuracy':>19} {'complete':>9} {'pruned':>7} {'trial s':>8}")
    for r in rows:
        best = f"{r['best']:.4f}" if r["best"] is not None else "-"
        print(f"{r['name']:<16} {r['seconds']:>8.1f} {best:>19} {r['complete']:>9} {r['pruned']:>7} "
              f"{r['trial_seconds']:>8.1f}")
    tpe, pruned, one, two = rows
    print(f"median pruning: {tpe['seconds'] / pruned['seconds']:.2f}x faster, best {pruned['best']:.4f} against "
          f"{tpe['best']:.4f}")
    print(f"grid on 2 workers: {one['seconds'] / two['seconds']:.2f}x faster than on 1")
    print(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
