"""tuneloop vs TRL's SFTTrainer: the same model, data, LoRA, batch size, max length and steps.

    .venv/bin/pip install -e ".[bench]"   # installs TRL, the peer
    .venv/bin/python benchmarks/sft_vs_trl.py --steps 30

Data: the shipped support tickets as conversational prompt/completion (system + user prompt, the
label as the assistant completion), so both sides train on completion tokens only. Exactly
steps x batch examples are used, one epoch, so both sides see the same tokens. Each side runs in
its own process (peak memory is that process's). Tokens/s counts real tokens (no padding) over
the time of the training call alone.

Order: by default both sides train on the same seeded shuffle of the rows, batch for batch (TRL with
`train_sampling_strategy="sequential"`, tuneloop with `order: sequential`), so their losses differ
only by the engines; `--order own` leaves each side its default order instead (TRL shuffles,
tuneloop groups similar lengths into batches).

Losses: each side logs its own training loss (TRL's completion also holds the newline after
<|im_end|>, an easy token ours leaves out, so those differ by construction). The comparable number
is the held-out loss: after training, both models are scored by the same function on the same
64 unseen tickets.

--ablate adds a third run: tuneloop without its shared-prefix forward and fused LoRA layers, to
show what each side of the gap is made of.

On a CUDA GPU both sides train in bf16 (TRL with `bf16=True`, the base loaded in bf16 as a user of a
bf16 checkpoint would). With no model hub there, `--random-init llama-3.2-1b` builds that shape with
random weights (the speed does not depend on the values) and the SmolLM2 tokenizer (`--tokenizer`),
and `--data long` makes support threads of 256 to 2048 tokens (summarise the thread: about half the
tokens are the completion):

    python benchmarks/sft_vs_trl.py --random-init llama-3.2-1b --tokenizer TOKENIZER_DIR --data long \
        --max-length 2048 --steps 40 --sides tuneloop,trl-defaults,trl,trl-liger

Sides: `tuneloop`; `trl` (TRL without gradient checkpointing, its fastest when memory allows);
`trl-defaults` (TRL as shipped: gradient checkpointing on, bf16 on); `trl-liger` (TRL with
`use_liger_kernel`, needs the liger-kernel package); `tuneloop-plain` (= --ablate; without packing,
the shared prefix and the fused LoRA layers), `tuneloop-nopack`, `tuneloop-noprefix`, `tuneloop-nofuse`
(one of each);
`tuneloop-qlora` (the same LoRA on a 4-bit NF4 base; CUDA and bitsandbytes only).
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


def tickets() -> list[dict]:
    return [json.loads(line) for line in (ROOT / "src/tuneloop/examples/support_tickets.jsonl").open()]


def examples(n: int) -> list[dict]:
    """Route one ticket: a system prompt with the labels, the ticket, the label as the completion."""
    from tuneloop.engine.tokenize import classification_messages

    rows = tickets()
    labels = sorted({r["label"] for r in rows})
    out = []
    for r in rows[:n]:
        messages = classification_messages(r["text"], labels, r["label"])
        out.append({"prompt": messages[:-1], "completion": messages[-1:]})
    return out


THREAD_SYSTEM = ("You are the support desk's router. Acknowledge each request with its team; when asked, "
                 "summarise the thread with one line per request.")


def long_examples(n: int, tokenizer_dir: str, max_length: int, seed: int) -> list[dict]:
    """Support threads of 256 to max_length tokens (each length drawn uniformly): tickets as user turns, each
    acknowledged with its team, then "summarise the thread"; the completion lists every request and team."""
    import random

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows, rng = tickets(), random.Random(seed)
    cost = [len(tok(r["text"])["input_ids"]) * 2 + 24 for r in rows]  # the ticket twice, the turns' overhead
    out = []
    for _ in range(n):
        budget, used, picked = rng.randint(256, max_length) - 80, 0, []
        while True:
            i = rng.randrange(len(rows))
            if used + cost[i] > budget and picked:
                break
            picked.append(rows[i])
            used += cost[i]
        prompt = [{"role": "system", "content": THREAD_SYSTEM}]
        for r in picked:
            prompt += [{"role": "user", "content": r["text"]}, {"role": "assistant", "content": f"Noted: {r['label']}."}]
        prompt.append({"role": "user", "content": "Summarise the thread: one line per request with its team."})
        summary = "\n".join(f"{k}. [{r['label']}] {r['text']}" for k, r in enumerate(picked, 1))
        out.append({"prompt": prompt, "completion": [{"role": "assistant", "content": summary}]})
    return out


RANDOM_SHAPES = {
    # a small Llama for quick checks of the benchmark itself on a CPU
    "llama-tiny": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=64, vocab_size=49152, tie_word_embeddings=True,
                       rms_norm_eps=1e-5, max_position_embeddings=8192,
                       rope_parameters={"rope_type": "default", "rope_theta": 100000.0}),
    # Llama-3.2-1B's architecture (the weights are random: tokens/s does not depend on their values)
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True,
                         rms_norm_eps=1e-5, max_position_embeddings=131072,
                         rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
}


def random_model(shape: str, tokenizer_dir: str, seed: int) -> str:
    """A folder with a randomly initialised model of `shape` (bf16) and the tokenizer of `tokenizer_dir`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = Path(tempfile.gettempdir()) / f"tuneloop-bench-{shape}-{seed}"
    if (folder / "config.json").exists():
        return str(folder)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(**RANDOM_SHAPES[shape], bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    torch.manual_seed(seed)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def model_folder(args) -> str:
    from tuneloop.config.settings import get_settings
    from tuneloop.models.loading import model_dir
    from tuneloop.models.registry import resolve

    if args.random_init:
        return random_model(args.random_init, tokenizer_folder(args), args.seed)
    return str(model_dir(resolve(args.model), get_settings()))


def tokenizer_folder(args) -> str:
    if args.tokenizer:
        return args.tokenizer
    from tuneloop.config.settings import get_settings
    from tuneloop.models.loading import tokenizer_dir
    from tuneloop.models.registry import resolve

    return str(tokenizer_dir(resolve("smollm2-135m-instruct"), get_settings()))


def gpu() -> bool:
    import torch

    return torch.cuda.is_available()


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

    # on a GPU a user loads the bf16 checkpoint as bf16 (TRL's dtype="auto"); on this CPU fp32 is faster
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16 if gpu() else torch.float32,
                                                 attn_implementation="sdpa")
    if gpu():
        model = model.to("cuda")
    torch.manual_seed(args.seed)  # the same LoRA initial weights as our loop draws (a PeftModel TRL accepts as is)
    model = apply_adapter(model, AdapterSection(type="lora", r=16, alpha=32, dropout=0.0))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = SFTConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch_size,
                       max_steps=args.steps, learning_rate=args.lr, lr_scheduler_type="cosine",
                       warmup_steps=round(0.03 * args.steps),  # our warmup_ratio 0.03 rounds the same way
                       logging_steps=1, save_strategy="no", report_to=[], max_length=args.max_length,
                       seed=args.seed, use_cpu=not gpu(), dataloader_num_workers=0, **trl_options(args.side),
                       **({"train_sampling_strategy": "sequential"} if args.order == "same" else {}))
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         callbacks=[Losses()])
    if len(trainer.train_dataset) != len(rows):  # TRL drops rows left with no completion token after truncation
        sys.exit(f"TRL kept {len(trainer.train_dataset)} of {len(rows)} rows: the sides would not see the same batches")
    started = time.perf_counter()
    trainer.train()
    return {"seconds": time.perf_counter() - started, "losses": losses, "model": trainer.model}


def trl_options(side: str) -> dict:
    """TRL's defaults turn on gradient checkpointing and bf16 autocast. On this CPU both are slower, so `trl`
    switches them off there; on a GPU `trl` keeps bf16 and drops only checkpointing (its fastest when memory
    allows), `trl-defaults` is TRL as shipped, `trl-liger` adds Liger's fused kernels."""
    if side == "trl-defaults":
        return {}
    options = {"gradient_checkpointing": False} if gpu() else {"bf16": False, "gradient_checkpointing": False}
    if side == "trl-liger":
        options["use_liger_kernel"] = True
    return options


def run_tuneloop(args, rows, folder) -> dict:
    from tuneloop.config.recipe import parse_recipe
    from tuneloop.config.settings import get_settings
    from tuneloop.engine.loop import Loop, run_loop

    data = Path(tempfile.mkdtemp()) / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": r["prompt"] + r["completion"]}) + "\n" for r in rows))
    recipe = parse_recipe({"model": folder, "method": "sft", "data": {"train": str(data)},
                           "adapter": {"type": "qlora" if args.side == "tuneloop-qlora" else "lora", "r": 16,
                                       "alpha": 32, "dropout": 0.0},
                           "hyperparameters": {"max_steps": args.steps, "batch_size": args.batch_size,
                                               "learning_rate": args.lr, "max_length": args.max_length,
                                               "scheduler": "cosine", "warmup_ratio": 0.03,
                                               "order": "sequential" if args.order == "same" else "length"},
                           "checkpoints": {"each_epoch": False}, "evaluation": {"each_epoch": False},
                           "seed": args.seed})
    loop = Loop(recipe, Path(tempfile.mkdtemp()) / "run", get_settings(), listener=profiler(args))
    result = run_loop(loop)
    if loop.data.dropped:
        sys.exit(f"tuneloop dropped {loop.data.dropped} of {len(rows)} rows: the sides would not see the same batches")
    return {"seconds": result.seconds, "losses": result.losses, "model": loop.model}


HELD_OUT = 64
SIDES = ["tuneloop", "trl", "trl-defaults", "trl-liger", "tuneloop-plain", "tuneloop-noprefix", "tuneloop-nofuse",
         "tuneloop-nopack", "tuneloop-qlora"]


def held_out_loss(model, folder: str, rows: list[dict], max_length: int) -> float:
    """Mean loss per answer token on unseen rows, by one function for both sides."""
    from transformers import AutoTokenizer

    from tuneloop.data.records import ChatRecord
    from tuneloop.evals.sft import teacher_forced

    records = [ChatRecord.model_validate({"messages": r["prompt"] + r["completion"]}) for r in rows]
    import torch

    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=gpu()):
        total, _, count, _ = teacher_forced(model, AutoTokenizer.from_pretrained(folder), records, max_length)
    return total / count


def plain_engine(side: str) -> None:
    """Switch off packing, the shared prefix and/or the fused LoRA layers (for --ablate and the ablation sides)."""
    import functools

    import tuneloop.engine.loop as loop
    import tuneloop.engine.methods.sft as sft

    if side in ("tuneloop-plain", "tuneloop-noprefix"):
        sft.MIN_SHARED_PREFIX = 10**9
    if side in ("tuneloop-plain", "tuneloop-nopack"):
        sft.labelled_logits = functools.partial(sft.labelled_logits, packed=False)
    if side in ("tuneloop-plain", "tuneloop-nofuse"):
        loop.speed_up_lora = lambda model: 0


def profiler(args):
    """With --profile N: an event listener that profiles steps 6..5+N and prints the top ops by device time."""
    if not args.profile:
        return None
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu() else [])
    key = "self_cuda_time_total" if gpu() else "self_cpu_time_total"

    def report(prof):
        print(prof.key_averages().table(sort_by=key, row_limit=30), file=sys.stderr)

    prof = profile(activities=activities, schedule=schedule(wait=3, warmup=2, active=args.profile),
                   on_trace_ready=report)
    prof.start()

    def on_event(event):
        if event.type == "step":
            if gpu():
                torch.cuda.synchronize()
            prof.step()
        elif event.type in ("done", "error"):
            prof.stop()

    return on_event


def child(args) -> None:
    import torch

    n = args.steps * args.batch_size
    folder = model_folder(args)
    if args.data == "long":
        everything = long_examples(n + HELD_OUT, folder, args.max_length, args.seed)
    else:
        everything = examples(n + HELD_OUT)
    rows, unseen = everything[:n], everything[n:]
    if args.order == "same":  # one seeded shuffle, which both sides then train on in that order
        import random

        random.Random(args.seed).shuffle(rows)
    if args.side in ("tuneloop-plain", "tuneloop-noprefix", "tuneloop-nofuse", "tuneloop-nopack"):
        plain_engine(args.side)
    out = (run_trl if args.side.startswith("trl") else run_tuneloop)(args, rows, folder)
    out["held_out_loss"] = held_out_loss(out.pop("model"), folder, unseen, args.max_length)
    out["tokens"] = real_tokens(folder, rows, args.max_length)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20 if gpu() else None
    print("RESULT " + json.dumps(out))


def run_side(args, side: str) -> dict | None:
    """One side in its own process; its RESULT line, or None (with its stderr printed) if it failed."""
    cmd = [sys.executable, __file__, "--side", side, "--steps", str(args.steps), "--batch-size",
           str(args.batch_size), "--max-length", str(args.max_length), "--lr", str(args.lr), "--seed", str(args.seed),
           "--model", args.model, "--data", args.data, "--order", args.order]
    cmd += ["--random-init", args.random_init] if args.random_init else []
    cmd += ["--tokenizer", args.tokenizer] if args.tokenizer else []
    cmd += ["--profile", str(args.profile)] if args.profile and side.startswith("tuneloop") else []
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if args.verbose:
        print(f"--- {side} stderr ---\n{proc.stderr[-20000:]}", file=sys.stderr)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        print(f"{side} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    result = json.loads(line[7:])
    result["tps"] = result["tokens"] / result["seconds"]
    result["final"] = sum(result["losses"][-5:]) / len(result["losses"][-5:])
    return result


def report(results: dict, title: str) -> None:
    """One round's table and ratios."""
    memory = "peak GPU MiB" if gpu() else "peak RSS MiB"
    print(f"{title:15} {'tokens/s':>9} {'seconds':>8} {memory:>13} {'train loss (last 5)':>20} {'held-out loss':>14}")
    for side, r in results.items():
        peak = r["peak_gpu_mib"] if gpu() else r["peak_rss_mib"]
        print(f"{side:15} {r['tps']:9.1f} {r['seconds']:8.1f} {peak:13.0f} {r['final']:20.4f} {r['held_out_loss']:14.4f}")
    ours = results.get("tuneloop")
    for side in [s for s in results if s.startswith("trl")]:
        if ours is None:
            break
        peer = results[side]
        gap = abs(ours["held_out_loss"] - peer["held_out_loss"]) / peer["held_out_loss"]
        target = " (target >= 3.0x)" if side == "trl" and not gpu() else ""
        print(f"speed ratio tuneloop/{side}: {ours['tps'] / peer['tps']:.2f}x{target}; held-out loss difference "
              f"{gap:.1%} (target <= 5%)")
    if ours and "tuneloop-plain" in results and "trl" in results:
        print(f"tuneloop without packing, shared prefix and fused LoRA: "
              f"{results['tuneloop-plain']['tps'] / results['trl']['tps']:.2f}x")
    print()


def summary(rounds: list[dict]) -> None:
    """Over the rounds: each side's median tokens/s, and the median of the rounds' ratios (each ratio is
    of two runs made one after the other, so a slow spell of the machine hits both sides of it)."""
    import statistics

    sides = list(dict.fromkeys(side for results in rounds for side in results))
    print(f"over {len(rounds)} rounds: median tokens/s " + ", ".join(
        f"{side} {statistics.median(r[side]['tps'] for r in rounds if side in r):.1f}" for side in sides))
    for side in [s for s in sides if s.startswith("trl")]:
        ratios = [r["tuneloop"]["tps"] / r[side]["tps"] for r in rounds if "tuneloop" in r and side in r]
        if ratios:
            print(f"speed ratio tuneloop/{side}: median {statistics.median(ratios):.2f}x, rounds "
                  + ", ".join(f"{x:.2f}x" for x in ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="A registry name or model folder.")
    parser.add_argument("--random-init", choices=sorted(RANDOM_SHAPES),
                        help="Train a randomly initialised model of this shape instead of --model.")
    parser.add_argument("--tokenizer", help="Tokenizer folder for --random-init and --data long (default: SmolLM2's).")
    parser.add_argument("--data", choices=["tickets", "long"], default="tickets",
                        help="tickets: route one ticket (short); long: summarise support threads of 256..max-length.")
    parser.add_argument("--order", choices=["same", "own"], default="same",
                        help="same: both sides train on one seeded shuffle of the rows, in that order (TRL "
                             "train_sampling_strategy='sequential', tuneloop order: sequential); own: each side's "
                             "default (TRL random, tuneloop length-grouped).")
    parser.add_argument("--sides", default="tuneloop,trl",
                        help="Comma-separated, of: " + ", ".join(SIDES) + ".")
    parser.add_argument("--trl-defaults", action="store_true", help="Also run TRL as shipped (= side trl-defaults).")
    parser.add_argument("--ablate", action="store_true", help="Also run tuneloop without its two CPU speed-ups.")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="Profile N steps of each tuneloop side and print its top ops (to stderr, shown with --verbose).")
    parser.add_argument("--rounds", type=int, default=1,
                        help="Run the sides this many times, alternating their order, and report the median ratio.")
    parser.add_argument("--verbose", action="store_true", help="Show each side's stderr.")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return child(args)
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    sides += ["trl-defaults"] * args.trl_defaults + ["tuneloop-plain"] * args.ablate
    unknown = [s for s in sides if s not in SIDES]
    if unknown or "tuneloop" not in sides or not any(s.startswith("trl") for s in sides):
        parser.error(f"--sides needs tuneloop and a TRL side from {', '.join(SIDES)} (got {args.sides})")
    order = list(dict.fromkeys(sides))
    rounds: list[dict] = []
    for number in range(args.rounds):
        # Alternate the order (A B, B A, A B, ...) so that a machine getting slower or faster during the
        # run does not favour whichever side always runs first.
        results = {}
        for side in order if number % 2 == 0 else order[::-1]:
            result = run_side(args, side)
            if result is not None:
                results[side] = result
        results = {side: results[side] for side in order if side in results}
        rounds.append(results)
        report(results, f"round {number + 1} of {args.rounds}" if args.rounds > 1 else "")
    if args.rounds > 1:
        summary(rounds)
    if any(len(results) < len(order) for results in rounds):
        sys.exit("a side failed (above)")


if __name__ == "__main__":
    main()
