"""tuneloop's dpo method vs TRL's DPOTrainer: the same model, preference pairs, LoRA, batch, steps and order.

    .venv/bin/pip install -e ".[bench]"   # installs TRL, the peer
    .venv/bin/python benchmarks/dpo_vs_trl.py --steps 20

Pairs: the shipped support tickets as a classification prompt (system + user), the ticket's team chosen over
another team (seeded). Both sides train LoRA (r 16, alpha 32, all linear layers) with the same learning rate,
beta 0.1 and the sigmoid loss, on exactly steps x batch pairs in the same order (TRL's sampler sequential,
tuneloop's `order: sequential`), one epoch, in their own processes (peak memory is that process's).

Tokens/s counts the tokens of both whole conversations of each pair (what a trainer that runs the prompt twice
processes), over the time of the training call alone. Held-out reward accuracy: after training, the same
function (tuneloop's, on each side's saved adapter) scores 100 unseen pairs: the share whose chosen answer gets
the larger implicit reward (log-ratio against the base).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_pairs(folder: Path, train_n: int, test_n: int) -> tuple[Path, Path]:
    from tests.engine.test_dpo import ticket_pairs

    return ticket_pairs(folder, train_n, test_n)


def run_tuneloop(model: str, train_file: Path, out: Path, steps: int, batch: int, lr: float) -> dict:
    from tuneloop.config.recipe import parse_recipe
    from tuneloop.config.settings import get_settings
    from tuneloop.engine.loop import train

    recipe = parse_recipe({"model": model, "method": "dpo", "data": {"train": str(train_file)},
                           "adapter": {"type": "lora", "r": 16, "alpha": 32},
                           "hyperparameters": {"max_steps": steps, "batch_size": batch, "learning_rate": lr,
                                               "warmup_ratio": 0.0, "order": "sequential", "max_length": 512,
                                               "precision": "fp32"},
                           "checkpoints": {"each_epoch": False}, "evaluation": {"each_epoch": False}, "seed": 0})
    result = train(recipe, get_settings(), out / "run")
    return {"seconds": result.seconds, "tokens_per_second": result.tokens_per_second, "final_loss": result.losses[-1],
            "adapter": str(result.final_dir)}


def run_trl(model: str, train_file: Path, out: Path, steps: int, batch: int, lr: float) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(0)
    rows = []
    for line in train_file.read_text().splitlines()[: steps * batch]:
        pair = json.loads(line)
        rows.append({"prompt": pair["input"]["messages"], "chosen": pair["preferred_output"],
                     "rejected": pair["non_preferred_output"]})
    tokenizer = AutoTokenizer.from_pretrained(model)
    policy = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    args = DPOConfig(output_dir=str(out / "trl"), per_device_train_batch_size=batch, max_steps=steps, learning_rate=lr,
                     lr_scheduler_type="cosine", warmup_steps=0, beta=0.1, loss_type=["sigmoid"], report_to=[],
                     use_cpu=not torch.cuda.is_available(), bf16=False, fp16=False, max_length=512, logging_steps=1,
                     save_strategy="no", seed=0, train_sampling_strategy="sequential", gradient_checkpointing=False)
    trainer = DPOTrainer(model=policy, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    tokens = sum(len(r) for r in trainer.train_dataset["input_ids"]) if "input_ids" in trainer.train_dataset.column_names \
        else None
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    if tokens is None:  # prompt + chosen and prompt + rejected, as TRL tokenised them
        data = trainer.train_dataset
        tokens = sum(2 * len(p) + len(c) + len(r) for p, c, r in
                     zip(data["prompt_ids"], data["chosen_ids"], data["rejected_ids"]))
    trainer.model.save_pretrained(out / "trl-adapter")
    tokenizer.save_pretrained(out / "trl-adapter")
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"seconds": seconds, "tokens_per_second": tokens / seconds, "final_loss": losses[-1],
            "adapter": str(out / "trl-adapter")}


def held_out_accuracy(model: str, adapter: str, test_file: Path) -> float:
    """The share of held-out pairs whose chosen answer gets the larger implicit reward (same code for both)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneloop.data.dataset import Source, load_records
    from tuneloop.engine.methods.dpo import collate_pairs, pair_logps, tokenize_pairs

    tokenizer = AutoTokenizer.from_pretrained(model)
    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    policy = PeftModel.from_pretrained(base, adapter).eval()
    _, records = load_records(Source(test_file))
    examples, _ = tokenize_pairs(tokenizer, [r for _, r in records], 512)
    wins = 0
    with torch.no_grad():
        for start in range(0, len(examples), 16):
            batch = collate_pairs(examples[start : start + 16], tokenizer.pad_token_id or 0)
            logps = pair_logps(policy, batch)[0]
            with policy.disable_adapter():
                ref = pair_logps(policy, batch)[0]
            half = len(batch["pair_index"])
            wins += int(((logps[:half] - ref[:half]) > (logps[half:] - ref[half:])).sum())
    return wins / len(examples)


def side(args: argparse.Namespace) -> None:
    out = Path(args.out)
    runner = run_tuneloop if args.side == "tuneloop" else run_trl
    result = runner(args.model, Path(args.train), out, args.steps, args.batch, args.lr)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["held_out_accuracy"] = held_out_accuracy(args.model, result["adapter"], Path(args.test))
    (out / f"{args.side}.json").write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--model", default=None, help="a model folder (default: the embedded SmolLM2, converted)")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--train", help=argparse.SUPPRESS)
    parser.add_argument("--test", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side(args)
        return
    from tuneloop.config.settings import get_settings
    from tuneloop.models.loading import model_dir
    from tuneloop.models.registry import resolve

    model = args.model or str(model_dir(resolve("smollm2-135m-instruct"), get_settings()))
    work = Path(tempfile.mkdtemp(prefix="dpo-bench-"))
    train_file, test_file = make_pairs(work, args.steps * args.batch, 100)
    results = {}
    for name in ("tuneloop", "trl"):
        subprocess.run([sys.executable, __file__, "--side", name, "--out", str(work), "--train", str(train_file),
                        "--test", str(test_file), "--model", model, "--steps", str(args.steps),
                        "--batch", str(args.batch), "--lr", str(args.lr)], check=True)
        results[name] = json.loads((work / f"{name}.json").read_text())
    print(f"{'side':10} {'tokens/s':>10} {'seconds':>8} {'peak MB':>8} {'final loss':>11} {'held-out acc':>13}")
    for name, r in results.items():
        print(f"{name:10} {r['tokens_per_second']:10.0f} {r['seconds']:8.1f} {r['peak_rss_mb']:8.0f} "
              f"{r['final_loss']:11.4f} {r['held_out_accuracy']:13.3f}")
    ratio = results["tuneloop"]["tokens_per_second"] / results["trl"]["tokens_per_second"]
    gap = results["tuneloop"]["held_out_accuracy"] - results["trl"]["held_out_accuracy"]
    print(f"tokens/s ratio tuneloop/trl: {ratio:.2f}x; held-out accuracy difference: {gap:+.3f}")


if __name__ == "__main__":
    main()
