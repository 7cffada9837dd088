"""Fuzz the live API with schemathesis over its own OpenAPI document and print the figures.

    .venv/bin/python scripts/fuzz_api.py                       # the CI-sized run (what tests/api/test_fuzz.py runs)
    .venv/bin/python scripts/fuzz_api.py --max-examples 200 --phases examples,coverage,fuzzing,stateful

Starts `tuneloop`'s app on 127.0.0.1 with a fresh home in a temp folder and one API key, runs
`schemathesis run` with every check against it (fixed seed), and prints operations, requests, responses
of status 500 or more, and the failures schemathesis found. Exit code: schemathesis's (0 when nothing failed)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

DEFAULT_PHASES = "examples,coverage,fuzzing"
CONFIG = Path(__file__).with_name("schemathesis.toml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CHAT_TEMPLATE = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def tiny_chat_model(folder: Path) -> Path:
    """A 2-layer, hidden-32 Llama with random weights, a small byte-level BPE and a ChatML template: requests
    that name it reach real generation in milliseconds."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(["where is my order, I was charged twice, reset my password please"] * 20,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<|im_start|>", "<|im_end|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def start_server(home: Path):
    """(base url, API key, stop function, the values of the config's placeholders): the app in a uvicorn
    thread, no worker, with a tiny chat model in an allowed folder and a small training file uploaded."""
    import io

    import uvicorn

    from tuneloop.api.app import create_app
    from tuneloop.config.settings import Settings
    from tuneloop.services.files import save_upload
    from tuneloop.store import repo

    model = tiny_chat_model(home / "allowed" / "tiny-chat")
    settings = Settings(home=home, offline=True, allowed_paths=[home / "allowed"])
    app = create_app(settings)
    rows = "".join(f'{{"messages": [{{"role": "user", "content": "{i} plus {i}?"}}, '
                   f'{{"role": "assistant", "content": "{2 * i}"}}]}}\n' for i in range(12))
    with app.state.sessions() as session:
        _, key = repo.create_key(session, name="fuzz")
        upload = save_upload(session, settings, stream=io.BytesIO(rows.encode()), filename="train.jsonl",
                             purpose="fine-tune")
        session.commit()
    fill = {"${TUNELOOP_FUZZ_MODEL}": str(model), "${TUNELOOP_FUZZ_FILE}": upload.id}
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return f"http://127.0.0.1:{port}", key, stop, fill


def fuzz(max_examples: int, seed: int, phases: str, workers: int, report_dir: Path,
         max_time: float | None = None, schema: Path | None = None) -> dict:
    """Run schemathesis against a fresh server; the figures as a dict (see `main`). `schema`: an OpenAPI
    document to use instead of the server's own (to fuzz an older build with today's document)."""
    home = Path(tempfile.mkdtemp(prefix="tuneloop-fuzz-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    base, key, stop, fill = start_server(home)
    report_dir.mkdir(parents=True, exist_ok=True)
    config = CONFIG.read_text()
    for placeholder, value in fill.items():
        config = config.replace(placeholder, value)
    (report_dir / CONFIG.name).write_text(config)
    cassette = report_dir / "requests.yaml"
    location = [str(schema), "--url", base] if schema else [f"{base}/openapi.json"]
    command = [str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(report_dir / CONFIG.name), "run", *location,
               "--max-examples", str(max_examples), "--seed", str(seed), "--phases", phases,
               "--workers", str(workers), "--request-timeout", "60", "--no-color",
               "-H", f"Authorization: Bearer {key}", "--report", "vcr,junit", "--report-vcr-path", str(cassette),
               "--report-junit-path", str(report_dir / "junit.xml"), "--output-truncate", "true",
               "--suppress-health-check", "all", "--continue-on-failure",
               "--generation-database", "none"]  # the same cases on every machine: no examples kept from before
    if max_time:
        command += ["--max-time", str(int(max_time))]
    started = time.time()
    try:
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    finally:
        stop()
        shutil.rmtree(home, ignore_errors=True)
    statuses = Counter(_statuses(cassette))
    return {"exit_code": done.returncode, "seconds": round(time.time() - started, 1),
            "output": done.stdout + done.stderr,
            "requests": sum(statuses.values()), "server_errors": sum(n for s, n in statuses.items() if s >= 500),
            "statuses": dict(sorted(statuses.items())), "operations": _operations(done.stdout)}


def _statuses(cassette: Path) -> list[int]:
    """The status code of every response schemathesis recorded."""
    if not cassette.exists():
        return []
    out = []
    for line in cassette.read_text(errors="replace").splitlines():
        stripped = line.strip()
        if stripped.startswith("code:") and line.startswith("      "):
            value = stripped.split(":", 1)[1].strip().strip("'\"")
            if value.isdigit():
                out.append(int(value))
    return out


def _operations(stdout: str) -> str:
    for line in stdout.splitlines():
        if "API Operations:" in line or "Operations:" in line:
            return line.strip()
    return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phases", default=DEFAULT_PHASES)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-time", type=float, default=None)
    parser.add_argument("--report-dir", type=Path, default=Path("artifacts/fuzz"))
    parser.add_argument("--schema", type=Path, default=None,
                        help="an OpenAPI document file to fuzz with instead of the server's own")
    parser.add_argument("--dump-schema", type=Path, default=None, help="write the server's document here and stop")
    args = parser.parse_args()
    if args.dump_schema:
        from tuneloop.api.app import create_app
        from tuneloop.config.settings import Settings

        app = create_app(Settings(home=Path(tempfile.mkdtemp(prefix="tuneloop-fuzz-")), offline=True))
        args.dump_schema.write_text(json.dumps(app.openapi(), indent=1))
        return
    result = fuzz(args.max_examples, args.seed, args.phases, args.workers, args.report_dir, args.max_time,
                  args.schema)
    print(result["output"][-20000:])
    print(json.dumps({k: v for k, v in result.items() if k != "output"}, indent=1))
    sys.exit(result["exit_code"])


if __name__ == "__main__":
    main()
