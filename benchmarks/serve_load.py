"""Serving under load: N concurrent streaming clients on loopback against a few LoRA adapters of the
embedded SmolLM2-135M. Prints requests/s, time to first token and tokens/s at p50/p95, against the
same requests sent one at a time (the peer: no concurrency) in the same run.

    .venv/bin/python benchmarks/serve_load.py --clients 8 --requests 32 --adapters 3
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import socket
import tempfile
import threading
import time
from pathlib import Path

PROMPTS = ["Where is my parcel? It was due on Monday.", "I was charged twice for one order.",
           "The app crashes when I open settings.", "How do I change my password?"]


def adapters(home: Path, n: int) -> list[str]:
    """n small LoRA runs on the embedded chat model (a few steps each, different seeds)."""
    from tuneloop.config.recipe import parse_recipe
    from tuneloop.config.settings import Settings
    from tuneloop.engine.loop import train

    data = home / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": p},
                                                     {"role": "assistant", "content": "Let me check that."}]}) + "\n"
                            for p in PROMPTS * 3))
    settings = Settings(home=home, offline=True)
    runs = []
    for i in range(n):
        recipe = parse_recipe({"data": {"train": str(data)}, "seed": i, "hyperparameters": {"max_steps": 2,
                               "batch_size": 4}, "checkpoints": {"each_epoch": False},
                               "evaluation": {"each_epoch": False}})
        runs.append(str(train(recipe, settings, home / "runs" / f"adapter-{i}").run_dir))
    return runs


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_load(client, models: list[str], requests: int, clients: int, max_tokens: int) -> dict:
    def one(i: int) -> tuple[float, float, int]:
        started = time.perf_counter()
        first, tokens = None, 0
        stream = client.chat.completions.create(model=models[i % len(models)], max_tokens=max_tokens, temperature=0,
                                                messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                                                stream=True, stream_options={"include_usage": True})
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - started
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        total = time.perf_counter() - started
        return first or total, total, tokens

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    ttft = [r[0] for r in results]
    speed = [r[2] / max(r[1] - r[0], 1e-9) for r in results if r[2] > 1]
    return {"requests_per_s": requests / wall, "tokens_per_s": sum(r[2] for r in results) / wall,
            "ttft_p50": percentile(ttft, 0.5), "ttft_p95": percentile(ttft, 0.95),
            "stream_tps_p50": percentile(speed, 0.5) if speed else 0.0,
            "stream_tps_p95": percentile(speed, 0.95) if speed else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--adapters", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()

    import uvicorn
    from openai import OpenAI

    from tuneloop.api.app import create_app
    from tuneloop.config.settings import Settings
    from tuneloop.store import repo

    home = Path(tempfile.mkdtemp(prefix="tuneloop-serve-load-"))
    print(f"training {args.adapters} LoRA adapters on smollm2-135m-instruct ...", flush=True)
    models = adapters(home, args.adapters)
    app = create_app(Settings(home=home, offline=True))
    with app.state.sessions() as session:
        _, key = repo.create_key(session, name="bench")
        session.commit()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=600)
    run_load(client, models, len(models), 1, 4)  # warm-up: load the base and every adapter once
    serial = run_load(client, models, args.requests, 1, args.max_tokens)
    loaded = run_load(client, models, args.requests, args.clients, args.max_tokens)
    server.should_exit = True
    print(f"{args.requests} streamed requests, {args.max_tokens} tokens max, {args.adapters} adapters on one base")
    print(f"{'':14} {'req/s':>7} {'tok/s':>7} {'TTFT p50':>9} {'TTFT p95':>9} {'stream tok/s p50':>17} {'p95':>7}")
    for name, r in ((f"{args.clients} clients", loaded), ("1 at a time", serial)):
        print(f"{name:14} {r['requests_per_s']:7.2f} {r['tokens_per_s']:7.1f} {r['ttft_p50']:8.2f}s "
              f"{r['ttft_p95']:8.2f}s {r['stream_tps_p50']:17.1f} {r['stream_tps_p95']:7.1f}")
    print(f"throughput ratio (concurrent / one at a time): {loaded['tokens_per_s'] / serial['tokens_per_s']:.2f}x; "
          f"models loaded: {app.state.models.loaded()}")


if __name__ == "__main__":
    main()
