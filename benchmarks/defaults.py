"""Do the methods' defaults work without tuning? Each classifier is trained once with no hyperparameter
given (the method's defaults) and once per point of a hand-tuning grid, on the same split, and scored on
the same held-out records. The table shows how far the defaults land from the best grid point.

    python benchmarks/defaults.py                                  # both datasets, both classifiers
    python benchmarks/defaults.py --datasets news --classifiers minilm-head --grid small

Datasets (shipped in src/tuneloop/examples/): `tickets` (672 support tickets, 6 labels) and `news`
(400 news texts, 4 labels, written for tuneloop; about a fifth are meant to mislead a keyword matcher).
Each is split once, by seed, into 70% training and 30% held out.

Classifiers: `minilm-head` (a head on the minilm-l6 encoder, LoRA beside it) and `smollm2-generative`
(SmolLM2-135M-Instruct answering with the label, scored by each label's likelihood). Accuracy is the
method's own `eval_accuracy` on the held-out records after training.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {"tickets": ROOT / "src/tuneloop/examples/support_tickets.jsonl",
            "news": ROOT / "src/tuneloop/examples/news_topics.jsonl"}
CLASSIFIERS = {"minilm-head": {"model": "minilm-l6", "method": "classify", "classifier": "head"},
               "smollm2-generative": {"model": "smollm2-135m-instruct", "method": "classify",
                                      "classifier": "generative"}}
GRIDS = {
    "minilm-head": {"full": {"learning_rate": [2e-4, 1e-3], "head_learning_rate": [1e-3, 3e-3, 1e-2],
                             "epochs": [4, 16]},
                    "small": {"learning_rate": [1e-3], "head_learning_rate": [1e-3, 1e-2], "epochs": [8]}},
    "smollm2-generative": {"full": {"learning_rate": [1e-4, 2e-4, 5e-4, 1e-3], "epochs": [1, 3]},
                           "small": {"learning_rate": [2e-4, 1e-3], "epochs": [3]}},
}


def split(path: Path, seed: int, folder: Path) -> tuple[Path, Path]:
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    random.Random(seed).shuffle(rows)
    cut = int(len(rows) * 0.7)
    train, test = folder / "train.jsonl", folder / "test.jsonl"
    train.write_text("\n".join(rows[:cut]) + "\n")
    test.write_text("\n".join(rows[cut:]) + "\n")
    return train, test


def accuracy(classifier: str, train: Path, test: Path, hyperparameters: dict, seed: int, home: Path) -> tuple[float, dict]:
    """Held-out accuracy after training with these hyperparameters (the rest: the method's defaults)."""
    from tuneloop.config.recipe import parse_recipe
    from tuneloop.config.settings import get_settings
    from tuneloop.engine.loop import Loop, run_loop

    recipe = parse_recipe({**CLASSIFIERS[classifier], "seed": seed,
                           "data": {"train": str(train), "validation": str(test)},
                           "hyperparameters": {"precision": "fp32", **hyperparameters},
                           "evaluation": {"each_epoch": False}, "checkpoints": {"each_epoch": False}})
    run_dir = Path(tempfile.mkdtemp(dir=home))
    loop = Loop(recipe, run_dir, get_settings())  # models converted once, in $TUNELOOP_HOME
    run_loop(loop)
    score = loop.eval_metrics()["eval_accuracy"]
    chosen = {k: v for k, v in loop.hp.model_dump().items() if k in ("learning_rate", "head_learning_rate", "epochs")}
    shutil.rmtree(run_dir, ignore_errors=True)
    return score, chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--classifiers", nargs="+", default=list(CLASSIFIERS), choices=list(CLASSIFIERS))
    parser.add_argument("--grid", default="full", choices=["full", "small"])
    parser.add_argument("--points", type=json.loads, help="Grid points to run instead of --grid, as a JSON list "
                        "of hyperparameter objects (to finish a grid that was cut short).")
    parser.add_argument("--defaults", type=json.loads, help='The defaults\' run, measured already: '
                        '{"accuracy": 0.9, "chose": {...}} (with one dataset and classifier).')
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="Also write every result here.")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="tuneloop-defaults-"))
    results, rows = [], []
    try:
        for dataset, classifier in itertools.product(args.datasets, args.classifiers):
            folder = Path(tempfile.mkdtemp(dir=home))
            train, test = split(DATASETS[dataset], args.seed, folder)
            started = time.time()
            if args.defaults is None:
                default, chosen = accuracy(classifier, train, test, {}, args.seed, home)
            else:  # measured already (a grid finished in a second run)
                default, chosen = args.defaults["accuracy"], args.defaults["chose"]
            print(f"  {dataset} {classifier} defaults {chosen}: {default:.3f}", file=sys.stderr, flush=True)
            grid = GRIDS[classifier][args.grid]
            points = args.points or [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
            best, best_point = -1.0, {}
            for point in points:
                if all(chosen.get(k) == v for k, v in point.items()):  # what the defaults ran already
                    score = default
                else:
                    score, _ = accuracy(classifier, train, test, point, args.seed, home)
                results.append({"dataset": dataset, "classifier": classifier, "point": point, "accuracy": score})
                print(f"  {dataset} {classifier} {point}: {score:.3f}", file=sys.stderr, flush=True)
                if score > best:
                    best, best_point = score, point
            results.append({"dataset": dataset, "classifier": classifier, "point": "defaults", "chosen": chosen,
                            "accuracy": default})
            rows.append((dataset, classifier, default, chosen, best, best_point, time.time() - started))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(f"\n{'dataset':9} {'classifier':19} {'defaults':>8} {'best grid':>9} {'best-defaults':>13}  defaults chose / best point")
    for dataset, classifier, default, chosen, best, point, seconds in rows:
        print(f"{dataset:9} {classifier:19} {default:8.3f} {best:9.3f} {100 * (best - default):+12.1f}p  "
              f"{chosen} / {point}  ({seconds:.0f}s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
