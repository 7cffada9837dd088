"""tuneloop vs TRL's SFTTrainer: the same model, data, LoRA, batch size, max length and steps.

    .venv/bin/pip install -e ".[bench]"   # installs TRL, the peer
    .venv/bin/python benchmarks/sft_vs_trl.py --steps 30

Data: the shipped support tickets as conversational prompt/completion (system + user prompt, the
label as the assistant completion), so both sides train on completion tokens only. Exactly
steps x batch examples are used, one epoch, so both sides see the same tokens. Each side runs in
its own process (peak memory is that process's). Tokens/s counts real tokens (no padding) over
the time of the training call alone.

Losses: each side logs its own training loss (TRL's completion also holds the newline after
<|im_end|>, an easy token ours leaves out, so those differ by construction). The comparable number
is the held-out loss: after training, both models are scored by the same function on the same
64 unseen tickets.

--ablate adds a third run: tuneloop without its shared-prefix forward and fused LoRA layers, to
show what each side of the gap is made of.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def examples(n: int) -> list[dict]:
    from tuneloop.engine.tokenize import classification_messages

    rows = [json.loads(line) for line in (ROOT / "src/tuneloop/examples/support_tickets.jsonl").open()]
    labels = sorted({r["label"] for r in rows})
    out = []
    for r in rows[:n]:
        messages = classification_messages(r["text"], labels, r["label"])
        out.append({"prompt": messages[:-1], "completion": messages[-1:]})
    return out


def model_folder() -> str:
    from tuneloop.config.settings import get_settings
    from tuneloop.models.loading import model_dir
    from tuneloop.models.registry import resolve

    return str(model_dir(resolve("smollm2-135m-instruct"), get_settings()))


def real_tokens(folder: str, rows: list[dict], max_length: int) -> int:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    return sum(min(max_length, len(tok.apply_chat_template(r["prompt"] + r["completion"], tokenize=True,
                                                           return_dict=True)["input_ids"])) for r in rows)


def run_trl(args, rows, folder) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    losses: list[float] = []

    class Losses(TrainerCallback):
        def on_log(self, _args, _state, _control, logs=None, **_):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    from tuneloop.config.recipe import AdapterSection
    from tuneloop.engine.adapters import apply_adapter

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    torch.manual_seed(args.seed)  # the same LoRA initial weights as our loop draws (a PeftModel TRL accepts as is)
    model = apply_adapter(model, AdapterSection(type="lora", r=16, alpha=32, dropout=0.0))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = SFTConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch_size,
                       max_steps=args.steps, learning_rate=args.lr, lr_scheduler_type="cosine",
                       warmup_steps=round(0.03 * args.steps),  # our warmup_ratio 0.03 rounds the same way
                       logging_steps=1, save_strategy="no", report_to=[], max_length=args.max_length,
                       seed=args.seed, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
                       # TRL's defaults turn on gradient checkpointing and bf16, both slower here; the peer
                       # runs at its best unless --trl-defaults asks for it as shipped
                       **({} if args.trl_defaults else {"bf16": False, "gradient_checkpointing": False}))
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         callbacks=[Losses()])
    started = time.perf_counter()
    trainer.train()
    return {"seconds": time.perf_counter() - started, "losses": losses, "model": trainer.model}


def run_tuneloop(args, rows, folder) -> dict:
    from tuneloop.config.recipe import parse_recipe
    from tuneloop.config.settings import get_settings
    from tuneloop.engine.loop import Loop, run_loop

    data = Path(tempfile.mkdtemp()) / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": r["prompt"] + r["completion"]}) + "\n" for r in rows))
    recipe = parse_recipe({"model": folder, "method": "sft", "data": {"train": str(data)},
                           "adapter": {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.0},
                           "hyperparameters": {"max_steps": args.steps, "batch_size": args.batch_size,
                                               "learning_rate": args.lr, "max_length": args.max_length,
                                               "scheduler": "cosine", "warmup_ratio": 0.03},
                           "checkpoints": {"each_epoch": False}, "evaluation": {"each_epoch": False},
                           "seed": args.seed})
    loop = Loop(recipe, Path(tempfile.mkdtemp()) / "run", get_settings())
    result = run_loop(loop)
    return {"seconds": result.seconds, "losses": result.losses, "model": loop.model}


HELD_OUT = 64


def held_out_loss(model, folder: str, rows: list[dict], max_length: int) -> float:
    """Mean loss per answer token on unseen rows, by one function for both sides."""
    from transformers import AutoTokenizer

    from tuneloop.data.records import ChatRecord
    from tuneloop.evals.sft import teacher_forced

    records = [ChatRecord.model_validate({"messages": r["prompt"] + r["completion"]}) for r in rows]
    total, _, count, _ = teacher_forced(model, AutoTokenizer.from_pretrained(folder), records, max_length)
    return total / count


def plain_engine() -> None:
    """Switch off the shared-prefix forward and the fused LoRA layers (for --ablate)."""
    import tuneloop.engine.loop as loop
    import tuneloop.engine.methods.sft as sft

    sft.MIN_SHARED_PREFIX = 10**9
    loop.speed_up_lora = lambda model: 0


def child(args) -> None:
    n = args.steps * args.batch_size
    everything = examples(n + HELD_OUT)
    rows, unseen = everything[:n], everything[n:]
    folder = model_folder()
    if args.side == "tuneloop-plain":
        plain_engine()
    out = (run_trl if args.side == "trl" else run_tuneloop)(args, rows, folder)
    out["held_out_loss"] = held_out_loss(out.pop("model"), folder, unseen, args.max_length)
    out["tokens"] = real_tokens(folder, rows, args.max_length)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trl-defaults", action="store_true",
                        help="Run TRL with its own defaults (bf16 autocast, gradient checkpointing).")
    parser.add_argument("--ablate", action="store_true", help="Also run tuneloop without its two CPU speed-ups.")
    parser.add_argument("--side", choices=["trl", "tuneloop", "tuneloop-plain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return child(args)
    results = {}
    for side in ("tuneloop", "trl") + (("tuneloop-plain",) if args.ablate else ()):
        cmd = [sys.executable, __file__, "--side", side, "--steps", str(args.steps), "--batch-size",
               str(args.batch_size), "--max-length", str(args.max_length), "--lr", str(args.lr), "--seed", str(args.seed)]
        cmd += ["--trl-defaults"] if args.trl_defaults else []
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
        results[side] = json.loads(line[7:])
    print(f"{'':15} {'tokens/s':>9} {'seconds':>8} {'peak MiB':>9} {'train loss (last 5)':>20} {'held-out loss':>14}")
    for side, r in results.items():
        r["tps"] = r["tokens"] / r["seconds"]
        r["final"] = sum(r["losses"][-5:]) / len(r["losses"][-5:])
        print(f"{side:15} {r['tps']:9.1f} {r['seconds']:8.1f} {r['peak_rss_mib']:9.0f} {r['final']:20.4f} "
              f"{r['held_out_loss']:14.4f}")
    ours, peer = results["tuneloop"], results["trl"]
    gap = abs(ours["held_out_loss"] - peer["held_out_loss"]) / peer["held_out_loss"]
    print(f"speed ratio tuneloop/TRL: {ours['tps'] / peer['tps']:.2f}x (target >= 3.0x); "
          f"held-out loss difference {gap:.1%} (target <= 5%)")
    if "tuneloop-plain" in results:
        print(f"tuneloop without shared prefix and fused LoRA: {results['tuneloop-plain']['tps'] / peer['tps']:.2f}x")


if __name__ == "__main__":
    main()
