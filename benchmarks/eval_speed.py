"""Label likelihood, batched (`label_logprobs_batch`: what `tuneloop eval`, validation and pre-labels use) against
the earlier path, one prompt at a time (`label_logprobs`), on the embedded SmolLM2-135M scoring short news texts
with four labels: how much faster, and how far apart the label probabilities are.

    .venv/bin/python benchmarks/eval_speed.py --n 1000 --batch 16

The texts are news_topics.jsonl cycled to --n. Both paths run in this process one after the other; the
ratio is what to read (the machine's speed moves during the day). Target: at least 4x, probabilities equal to 1e-5."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="texts to score")
    parser.add_argument("--batch", type=int, default=16, help="prompts per batch on the batched path")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()

    import torch

    from tuneloop.config.settings import Settings
    from tuneloop.data.dataset import Source, load_records
    from tuneloop.engine.methods.classify import (classification_prompt_ids, common_prefix, label_logprobs,
                                                  label_logprobs_batch, label_token_ids, softmax)
    from tuneloop.models.loading import load_causal_lm

    news = Path(__file__).resolve().parents[1] / "src/tuneloop/examples/news_topics.jsonl"
    _, numbered = load_records(Source(news))
    records = [record for _, record in numbered]
    texts = [records[i % len(records)].text for i in range(args.n)]
    labels = sorted({label for record in records for label in record.labels})
    model, tokenizer = load_causal_lm(args.model, Settings.from_env())
    model.eval()
    ids = label_token_ids(tokenizer, labels)

    started = time.perf_counter()
    prompts = [classification_prompt_ids(tokenizer, text, labels) for text in texts]
    batched = label_logprobs_batch(model, tokenizer, prompts, ids, batch_size=args.batch)
    fast = time.perf_counter() - started
    started = time.perf_counter()
    with torch.no_grad():
        one_by_one = [label_logprobs(model, tokenizer, text, labels, ids) for text in texts]
    slow = time.perf_counter() - started

    gap = max(abs(a - b) for x, y in zip(batched, one_by_one) for a, b in zip(softmax(x), softmax(y)))
    agree = sum(max(range(len(x)), key=x.__getitem__) == max(range(len(y)), key=y.__getitem__)
                for x, y in zip(batched, one_by_one))
    tokens = sum(len(p) for p in prompts)
    print(f"{args.n} texts, {len(labels)} labels ({', '.join(labels)}), {tokens / args.n:.0f} prompt tokens on average, "
          f"{common_prefix(prompts)} shared by all; {torch.get_num_threads()} threads")
    print(f"one prompt at a time: {slow:7.1f} s ({args.n / slow:6.1f} texts/s)")
    print(f"batched ({args.batch} a batch): {fast:7.1f} s ({args.n / fast:6.1f} texts/s)")
    print(f"batched is {slow / fast:.2f}x one at a time; largest label-probability gap {gap:.2e}; "
          f"same top label {agree}/{args.n}")


if __name__ == "__main__":
    main()
