"""Batched generation (`complete_batch`, what evaluation and pre-labels use) against one prompt at a time
(`complete`), on the embedded SmolLM2-135M: the same greedy answers, and how much faster.

    .venv/bin/python benchmarks/generation_batch.py --prompts 32 --max-tokens 32 --batch-size 8

Both sides run in this process, one after the other, twice in alternating order; the ratio of the
medians is what to read (the machine's speed moves during the day)."""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from tuneloop.config.settings import Settings
    from tuneloop.data.dataset import Source, load_records
    from tuneloop.models.generation import GenerationOptions, complete, complete_batch
    from tuneloop.models.loading import load_causal_lm

    tickets = Path(__file__).resolve().parents[1] / "src/tuneloop/examples/support_tickets.jsonl"
    _, numbered = load_records(Source(tickets))
    conversations = [[{"role": "user", "content": record.text}] for _, record in numbered[: args.prompts]]
    model, tokenizer = load_causal_lm("smollm2-135m-instruct", Settings.from_env())
    options = GenerationOptions(max_tokens=args.max_tokens)

    def one_by_one():
        return [complete(model, tokenizer, c, options) for c in conversations]

    def batched():
        return complete_batch(model, tokenizer, conversations, options, batch_size=args.batch_size)

    times: dict[str, list[float]] = {"one by one": [], "batched": []}
    answers: dict[str, list] = {}
    for round_ in range(args.rounds):
        order = [("one by one", one_by_one), ("batched", batched)]
        for name, run in order if round_ % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            answers[name] = run()
            times[name].append(time.perf_counter() - started)
    tokens = sum(a.completion_tokens for a in answers["batched"])
    same = sum(a.text == b.text for a, b in zip(answers["batched"], answers["one by one"]))
    for name, seconds in times.items():
        print(f"{name:>10}: median {statistics.median(seconds):6.2f} s over {args.rounds} rounds "
              f"({tokens / statistics.median(seconds):6.1f} tokens/s)")
    print(f"batched is {statistics.median(times['one by one']) / statistics.median(times['batched']):.2f}x "
          f"one by one; {same}/{len(conversations)} answers identical "
          f"({args.prompts} ticket prompts, {args.max_tokens} tokens at most, batches of {args.batch_size})")


if __name__ == "__main__":
    main()
