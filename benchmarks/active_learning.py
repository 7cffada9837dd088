"""Active learning on the shipped support tickets: accuracy on the same held-out 20% after k labels, when
the queue hands out the most uncertain records first versus in random order. Each round trains a
MiniLM-L6 head on everything labelled so far (answers come from the gold labels, as in
`tuneloop review loop --simulate-from label`) and re-predicts the rest.

    python benchmarks/active_learning.py                        # 5 rounds of 30 labels, seeds 0 and 1
    python benchmarks/active_learning.py --per-round 50 --rounds 3 --seeds 0 --plot al.png
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TICKETS = ROOT / "src/tuneloop/examples/support_tickets.jsonl"


def run(order: str, seed: int, rounds: int, per_round: int, uncertainty: str) -> list[tuple[int, float]]:
    from tuneloop.config.settings import Settings
    from tuneloop.services.review import loop, projects
    from tuneloop.store.db import make_engine, sessions, upgrade

    home = Path(tempfile.mkdtemp(prefix="tuneloop-al-"))
    settings = Settings(home=home, offline=True)
    engine = make_engine(settings.db_url)
    upgrade(engine)
    try:
        with sessions(engine)() as session:
            project = projects.create_project(session, settings, name="tickets", task="classification",
                                              data=str(TICKETS), holdout=0.2, seed=seed)
            config = loop.LoopSettings(order=order, seed=seed, uncertainty=uncertainty)
            done = loop.run_simulation(session, settings, project, field="label", rounds=rounds,
                                       per_round=per_round, config=config)
            return [(r.labels_used, r.accuracy) for r in done]
    finally:
        engine.dispose()
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--uncertainty", default="margin", choices=["margin", "entropy"])
    parser.add_argument("--plot", type=Path, help="Write the curves as a PNG.")
    args = parser.parse_args()
    curves: dict[str, list[list[float]]] = {"uncertainty": [], "random": []}
    labels_used: list[int] = []
    started = time.time()
    for seed in args.seeds:
        for order in curves:
            points = run(order, seed, args.rounds, args.per_round, args.uncertainty)
            labels_used = [k for k, _ in points]
            curves[order].append([accuracy for _, accuracy in points])
            print(f"seed {seed} {order:<11} " + "  ".join(f"{k}:{a:.3f}" for k, a in points), flush=True)
    mean = {order: [statistics.mean(run[i] for run in runs) for i in range(len(labels_used))]
            for order, runs in curves.items()}
    print(f"\nheld-out accuracy after k labels (mean of seeds {args.seeds}, {args.uncertainty} uncertainty; "
          f"{time.time() - started:.0f} s)")
    print(f"{'labels':>7} {'uncertainty-first':>18} {'random':>8} {'gain':>7}")
    for i, k in enumerate(labels_used):
        print(f"{k:>7} {mean['uncertainty'][i]:>18.3f} {mean['random'][i]:>8.3f} "
              f"{mean['uncertainty'][i] - mean['random'][i]:>+7.3f}")
    area = {order: statistics.mean(values) for order, values in mean.items()}
    print(f"mean over the curve: uncertainty-first {area['uncertainty']:.3f}, random {area['random']:.3f} "
          f"(ratio {area['uncertainty'] / area['random']:.3f})")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for order, values in mean.items():
            ax.plot(labels_used, values, marker="o", label=f"{order} order")
        ax.set_xlabel("labels used")
        ax.set_ylabel("held-out accuracy")
        ax.set_title("Active learning on the support tickets (MiniLM-L6 head)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
