"""tuneloop's grpo method vs TRL's GRPOTrainer: the same model, prompts, reward, LoRA, group size, batch, steps.

    .venv/bin/pip install -e ".[bench]"   # installs TRL, the peer
    .venv/bin/python benchmarks/grpo_vs_trl.py --steps 10

Prompts: the shipped support tickets, each as one user message that asks which team should handle it; the reward
is 1 when the completion names the ticket's team (tuneloop: a string_check grader, `ilike`; TRL: the same test as
a Python reward function). Both sides train LoRA (r 16, alpha 32, all linear layers) at the same learning rate,
4 completions per prompt at temperature 0.5 (at 1.0 SmolLM2-135M samples noise that almost never names a
team, and neither side learns) and at most 16 new tokens, 4 prompts a step (TRL: 16 completions a
step), beta 0, the dapo loss, one step per generation, in their own processes (peak memory is that process's).

It prints completions/s (the step's completions over the training time), the reward curve of each side (the mean
reward of each step's completions) and draws both in benchmarks/grpo_vs_trl.png.

Tokens/s counts each completion with its whole prompt (what TRL's num_input_tokens_seen counts), over the time
of the training call alone. Held-out reward: after training, the same function scores one greedy completion per
unseen prompt from each side's saved adapter.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GROUP, NEW_TOKENS, TEMPERATURE = 4, 16, 0.5
GRADER = {"type": "string_check", "name": "team", "input": "{{ sample.output_text }}", "reference": "{{ item.team }}",
          "operation": "ilike"}


def ticket_prompts(folder: Path, train_n: int, test_n: int) -> tuple[Path, Path]:
    rows = [json.loads(line) for line in (ROOT / "src/tuneloop/examples/support_tickets.jsonl").read_text().splitlines()]
    teams = sorted({r["label"] for r in rows})
    random.Random(0).shuffle(rows)

    def prompt(row: dict) -> dict:
        ask = f"Ticket: {row['text']}\n\nWhich team should handle this ticket: {', '.join(teams)}? Answer with the team's name only."
        return {"messages": [{"role": "user", "content": ask}], "team": row["label"]}

    paths = []
    for name, part in (("train", rows[:train_n]), ("test", rows[train_n : train_n + test_n])):
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(prompt(r)) + "\n" for r in part))
        paths.append(path)
    return paths[0], paths[1]


def named(completion: str, team: str) -> float:
    return float(team.lower() in completion.lower())


def run_tuneloop(model: str, train_file: Path, out: Path, steps: int, prompts: int, lr: float) -> dict:
    import tuneloop.evals.rl  # noqa: F401 - the grader reward source
    from tuneloop.config.recipe import parse_recipe
    from tuneloop.config.settings import get_settings
    from tuneloop.engine.loop import train

    recipe = parse_recipe({"model": model, "method": "grpo", "data": {"train": str(train_file)},
                           "adapter": {"type": "lora", "r": 16, "alpha": 32},
                           "hyperparameters": {"max_steps": steps, "batch_size": prompts, "learning_rate": lr,
                                               "warmup_ratio": 0.0, "order": "sequential", "max_length": 512,
                                               "precision": "fp32"},
                           "grpo": {"rewards": [{"grader": GRADER}], "num_generations": GROUP, "temperature": TEMPERATURE,
                                    "max_completion_length": NEW_TOKENS, "loss": "dapo", "beta": 0.0},
                           "checkpoints": {"each_epoch": False}, "evaluation": {"each_epoch": False}, "seed": 0})
    result = train(recipe, get_settings(), out / "run")
    events = [json.loads(line) for line in (out / "run" / "events.jsonl").read_text().splitlines()]
    rewards = [e["reward"] for e in events if e["type"] == "step" and "reward" in e]
    return {"seconds": result.seconds, "tokens_per_second": result.tokens_per_second, "mean_reward": _mean(rewards),
            "rewards": rewards, "adapter": str(result.final_dir)}


def run_trl(model: str, train_file: Path, out: Path, steps: int, prompts: int, lr: float) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    rows = [json.loads(line) for line in train_file.read_text().splitlines()][: steps * prompts]
    data = Dataset.from_list([{"prompt": r["messages"], "team": r["team"]} for r in rows])

    def team_named(prompts, completions, team, **kwargs):
        return [named(c[-1]["content"] if isinstance(c, list) else c, t) for c, t in zip(completions, team)]

    tokenizer = AutoTokenizer.from_pretrained(model)
    policy = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    args = GRPOConfig(output_dir=str(out / "trl"), per_device_train_batch_size=prompts * GROUP, num_generations=GROUP,
                      max_completion_length=NEW_TOKENS, temperature=TEMPERATURE, max_steps=steps, learning_rate=lr,
                      lr_scheduler_type="cosine", warmup_steps=0, beta=0.0, loss_type="dapo", report_to=[],
                      use_cpu=not torch.cuda.is_available(), bf16=False, fp16=False, logging_steps=1,
                      save_strategy="no", seed=0, gradient_checkpointing=False, shuffle_dataset=False)
    trainer = GRPOTrainer(model=policy, reward_funcs=[team_named], args=args, train_dataset=data,
                          processing_class=tokenizer,
                          peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    trainer.model.save_pretrained(out / "trl-adapter")
    tokenizer.save_pretrained(out / "trl-adapter")
    rewards = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
    return {"seconds": seconds, "tokens_per_second": trainer.state.num_input_tokens_seen / seconds,
            "mean_reward": _mean(rewards), "rewards": rewards, "adapter": str(out / "trl-adapter")}


def _mean(values: list[float]) -> float:
    return sum(values) / max(len(values), 1)


def held_out_reward(model: str, adapter: str, test_file: Path) -> float:
    """The mean reward of one greedy completion per unseen prompt (same code for both sides)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneloop.models.generation import GenerationOptions, complete_batch

    tokenizer = AutoTokenizer.from_pretrained(model)
    policy = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32), adapter).eval()
    rows = [json.loads(line) for line in test_file.read_text().splitlines()]
    answers = complete_batch(policy, tokenizer, [r["messages"] for r in rows],
                             GenerationOptions(max_tokens=NEW_TOKENS), batch_size=16)
    return _mean([named(a.text, r["team"]) for a, r in zip(answers, rows)])


def side(args: argparse.Namespace) -> None:
    out = Path(args.out)
    runner = run_tuneloop if args.side == "tuneloop" else run_trl
    result = runner(args.model, Path(args.train), out, args.steps, args.prompts, args.lr)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["held_out_reward"] = held_out_reward(args.model, result["adapter"], Path(args.test))
    (out / f"{args.side}.json").write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--prompts", type=int, default=4, help="prompts a step (x --group completions)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--group", type=int, default=4, help="completions per prompt")
    parser.add_argument("--new-tokens", dest="new_tokens", type=int, default=16, help="completion tokens at most")
    parser.add_argument("--test", type=int, default=40, help="held-out prompts")
    parser.add_argument("--model", default=None, help="a model folder (default: the embedded SmolLM2, converted)")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--train", help=argparse.SUPPRESS)
    parser.add_argument("--test-file", dest="test_file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global GROUP, NEW_TOKENS
    GROUP, NEW_TOKENS = args.group, args.new_tokens
    if args.side:
        args.test = args.test_file
        side(args)
        return
    from tuneloop.config.settings import get_settings
    from tuneloop.models.loading import model_dir
    from tuneloop.models.registry import resolve

    model = args.model or str(model_dir(resolve("smollm2-135m-instruct"), get_settings()))
    work = Path(tempfile.mkdtemp(prefix="grpo-bench-"))
    train_file, test_file = ticket_prompts(work, args.steps * args.prompts, args.test)
    results = {}
    for name in ("tuneloop", "trl"):
        subprocess.run([sys.executable, __file__, "--side", name, "--out", str(work), "--train", str(train_file),
                        "--test-file", str(test_file), "--model", model, "--steps", str(args.steps),
                        "--prompts", str(args.prompts), "--lr", str(args.lr), "--group", str(args.group),
                        "--new-tokens", str(args.new_tokens)], check=True)
        results[name] = json.loads((work / f"{name}.json").read_text())
    completions = args.steps * args.prompts * GROUP
    print(f"{'side':10} {'completions/s':>14} {'tokens/s':>9} {'seconds':>8} {'s/step':>7} {'peak MB':>8} "
          f"{'train reward':>13} {'held-out reward':>16}")
    for name, r in results.items():
        print(f"{name:10} {completions / r['seconds']:14.2f} {r['tokens_per_second']:9.0f} {r['seconds']:8.1f} "
              f"{r['seconds'] / args.steps:7.2f} {r['peak_rss_mb']:8.0f} {r['mean_reward']:13.3f} "
              f"{r['held_out_reward']:16.3f}")
    print("reward per step (the mean over the step's completions):")
    for name, r in results.items():
        print(f"  {name:10} " + " ".join(f"{v:.2f}" for v in r["rewards"]))
        half = len(r["rewards"]) // 2
        print(f"  {'':10} first half {_mean(r['rewards'][:half]):.3f} -> second half {_mean(r['rewards'][half:]):.3f}")
    ratio = results["trl"]["seconds"] / results["tuneloop"]["seconds"]
    print(f"completions/s ratio tuneloop/trl: {ratio:.2f}x")
    print(f"tokens/s ratio tuneloop/trl: "
          f"{results['tuneloop']['tokens_per_second'] / results['trl']['tokens_per_second']:.2f}x")
    plot = Path(__file__).with_suffix(".png")
    _plot(results, plot)
    print(f"reward curves: {plot}")


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5))
    for name, r in results.items():
        axes.plot(range(1, len(r["rewards"]) + 1), r["rewards"], marker="o", label=name)
    axes.set_xlabel("step")
    axes.set_ylabel("mean reward of the step's completions")
    axes.set_title("GRPO on the ticket-team reward, same prompts and settings")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    main()
