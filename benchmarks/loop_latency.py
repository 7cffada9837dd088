"""How long a person waits for a round of the loop, stage by stage: label 100 records, export everything
reviewed, train a head on minilm-l6, re-predict every open and held-out record, record the round.

    python benchmarks/loop_latency.py                      # 2,000 news texts, 2 rounds of 100 labels
    python benchmarks/loop_latency.py --records 500 --rounds 1

The texts are the shipped news_topics.jsonl (400 texts, 4 labels) repeated with a numbered suffix up to
--records; a tenth is held out and labelled first (it measures each round). Labels come from the gold field
(the simulated annotator), so the times are the machine's, not a person's. Prediction is split into the
model's forward passes and everything else (the database writes, the queue's bookkeeping). Targets (the
issue): a whole round under 60 s, the prediction of 2,000 short texts under 20 s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEWS = ROOT / "src/tuneloop/examples/news_topics.jsonl"
TARGET_ROUND, TARGET_PREDICT = 60.0, 20.0


def texts(count: int) -> list[dict]:
    base = [json.loads(line) for line in NEWS.read_text().splitlines() if line.strip()]
    return [{"text": f"{row['text']} (item {i})" if i >= len(base) else row["text"], "label": row["label"]}
            for i, row in ((i, base[i % len(base)]) for i in range(count))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--model", default="minilm-l6")
    args = parser.parse_args()

    from tuneloop.config.settings import Settings
    from tuneloop.services.review import export, loop, prelabel, projects
    from tuneloop.services.review.rounds import record_round
    from tuneloop.store import review as store
    from tuneloop.store.db import make_engine, sessions, upgrade

    home = Path(tempfile.mkdtemp(prefix="tuneloop-loop-"))
    try:
        settings = Settings(home=home, offline=True)
        engine = make_engine(settings.db_url)
        upgrade(engine)
        data = home / "news.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in texts(args.records)))
        config = loop.LoopSettings(model=args.model)
        with sessions(engine)() as session:
            project = projects.create_project(session, settings, name="news", task="classification", data=str(data),
                                              holdout=0.1)
            user = loop._simulator(session, project)
            held = store.count_records(session, project_id=project.id).get("holdout:open", 0)
            loop.simulate_labels(session, project, user, "label", held, "id")
            print(f"{args.records} records, {held} held out and labelled first; {args.rounds} rounds of "
                  f"{args.per_round} labels on {args.model}\n")
            print(f"{'round':>5} {'label':>7} {'export':>7} {'train':>7} {'forward':>8} {'other':>7} "
                  f"{'predict':>8} {'record':>7} {'total':>7} {'accuracy':>9}")
            for number in range(1, args.rounds + 1):
                t0 = time.perf_counter()
                loop.simulate_labels(session, project, user, "label", args.per_round, "uncertainty")
                t1 = time.perf_counter()
                export.export_rows(session, project, "classify")
                t2 = time.perf_counter()
                run_dir = loop.train_round(session, settings, project, config, number)
                t3 = time.perf_counter()
                predictor = prelabel.LocalModel(str(run_dir), settings)
                forward = 0.0
                classify = predictor.classify

                def timed(batch, labels, classify=classify):
                    nonlocal forward
                    started = time.perf_counter()
                    out = classify(batch, labels)
                    forward += time.perf_counter() - started
                    return out

                predictor.classify = timed  # type: ignore[method-assign]
                result = prelabel.prelabel(session, project, predictor, records="remaining")
                t4 = time.perf_counter()
                row = record_round(session, project, predictor.name, labels_used=None, seconds=t4 - t0,
                                   predicted=result.predicted)
                t5 = time.perf_counter()
                predict = t4 - t3
                print(f"{number:>5} {t1 - t0:>6.1f}s {t2 - t1:>6.1f}s {t3 - t2:>6.1f}s {forward:>7.1f}s "
                      f"{predict - forward:>6.1f}s {predict:>7.1f}s {t5 - t4:>6.1f}s {t5 - t0:>6.1f}s "
                      f"{row.accuracy:>9.3f}   ({result.predicted} records predicted)")
                print(f"      round / target {TARGET_ROUND:.0f} s: {(t5 - t0) / TARGET_ROUND:.2f}x; prediction / "
                      f"target {TARGET_PREDICT:.0f} s: {predict / TARGET_PREDICT:.2f}x")
        engine.dispose()
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
