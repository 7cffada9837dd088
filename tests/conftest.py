"""Shared fixtures: a temp home folder and a tiny chat model (random weights, real chat template)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

# The CLI's tables are read by the tests: print them wide, whatever terminal (or none: an xdist worker's output is
# a pipe) the suite runs in. rich reads COLUMNS when a console is made, before any test imports the CLI.
os.environ["COLUMNS"] = "200"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest workers on the 2 cores: each computes on one thread, and so do the servers,
    # workers and training children it starts (they inherit this), so nothing oversubscribes the cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = """the customer asked where the order is and when the package will arrive at the address
please reset my password because I cannot log in to my account and the code never comes
I was charged twice for the same invoice and want a refund of the payment to my card
the router keeps dropping the connection after the firmware update and the app shows an error
I would like to return the earbuds and get an exchange or a warranty replacement label
great service thanks a lot, a suggestion: add dark mode to the app, it would be nice
you are a helpful assistant answer in one word billing shipping technical account returns feedback
""" * 3


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own TUNELOOP_HOME and never reaches the network."""
    path = tmp_path / "home"
    monkeypatch.setenv("TUNELOOP_HOME", str(path))
    monkeypatch.setenv("TUNELOOP_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return path


def build_tiny_tokenizer(folder: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS.splitlines(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>",
                                   bos_token="<|im_start|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    return fast


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 Llama with a small BPE tokenizer and a ChatML template, saved as a folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-chat")
    tokenizer = build_tiny_tokenizer(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_chat_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_chat_model)


def write_jsonl(path: Path, rows: list) -> Path:
    """Write rows; a str row is written as-is (for broken lines), anything else as JSON."""
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def labelled_rows(n: int = 12) -> list[dict]:
    labels = ["billing", "shipping", "technical"]
    return [{"text": f"request number {i} about topic {labels[i % 3]} with detail {i * 7}", "label": labels[i % 3]}
            for i in range(n)]


def chat_rows(n: int = 12) -> list[dict]:
    return [{"messages": [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": f"What is {i} plus {i}?"},
                          {"role": "assistant", "content": f"{2 * i}"}]} for i in range(n)]


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 BERT with a WordPiece vocabulary from the corpus, saved as a folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-encoder")
    words = sorted({w for line in CORPUS.lower().splitlines() for w in line.replace(",", " ").replace(":", " ").split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *"abcdefghijklmnopqrstuvwxyz0123456789",
             *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789")]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=128,
                        initializer_range=0.3)  # large enough that the [CLS] output depends on the text
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def real_chat_model(tmp_path_factory) -> Path:
    """The embedded SmolLM2-135M-Instruct, converted once per session into its own folder."""
    from tuneloop.config.settings import Settings
    from tuneloop.models.loading import model_dir
    from tuneloop.models.registry import resolve

    home = tmp_path_factory.mktemp("real-home")
    return model_dir(resolve("smollm2-135m-instruct"), Settings(home=home, offline=True))


def ticket_split(tmp_path: Path) -> tuple[Path, Path]:
    """The shipped support tickets split 80/20 (seeded, stratified) into train.jsonl and test.jsonl."""
    from tuneloop.data.dataset import Source, load_records
    from tuneloop.data.split import split_records
    from tuneloop.data.writers import write_records

    root = Path(__file__).resolve().parents[1]
    _, numbered = load_records(Source(root / "src/tuneloop/examples/support_tickets.jsonl"))
    parts = split_records(numbered, {"train": 0.8, "test": 0.2}, seed=0)
    for name, rows in parts.items():
        write_records(rows, tmp_path / f"{name}.jsonl", "labelled")
    return tmp_path / "train.jsonl", tmp_path / "test.jsonl"


PG_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL 15 server for this test session (Debian's package), on 127.0.0.1 and a free
    port, trust auth; skipped with the reason when it cannot run here."""
    import os
    import shutil
    import socket
    import subprocess

    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL is not installed (make system-deps installs Debian's postgresql package)")
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as the postgres user")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="tuneloop-pg-"))  # not under pytest's root-only folder: postgres must reach it
    data = folder / "data"
    if as_postgres:
        shutil.chown(folder, "postgres", "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    user = "postgres" if as_postgres else os.environ.get("USER", "postgres")
    run = lambda *cmd: subprocess.run([*as_postgres, *cmd], check=True, capture_output=True)  # noqa: E731
    try:
        run(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", user, "--no-sync")
        run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-o",
            f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=off", "start")
    except subprocess.CalledProcessError as e:
        pytest.skip(f"PostgreSQL did not start: {e.stderr.decode()[-300:]}")
    subprocess.run([*as_postgres, "psql", "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", "postgres", "-c",
                    "create database tuneloop"], check=True, capture_output=True)
    yield f"postgresql+psycopg://{user}@127.0.0.1:{port}/tuneloop"
    subprocess.run([*as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                   capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def live_server(home, with_worker: bool, database_url: str | None = None, allowed_paths: list | None = None,
                **fields):
    """allowed_paths: server folders API clients may name by path (default: pytest's temp root, where the
    tiny models live); fields: other Settings (max_upload_bytes, ...)."""
    import uvicorn

    from tuneloop.api.app import create_app
    from tuneloop.config.settings import Settings
    from tuneloop.services.job_kinds import kinds
    from tuneloop.store import repo
    from tuneloop.worker.runner import Worker

    settings = Settings(home=home, offline=True, database_url=database_url,
                        allowed_paths=[Path(home).parent] if allowed_paths is None else allowed_paths, **fields)
    app = create_app(settings)
    with app.state.sessions() as session:
        _, key = repo.create_key(session, name="tests")
        session.commit()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    stop = threading.Event()
    worker = threading.Thread(target=Worker(settings, "test-worker", kinds=kinds()).run, kwargs={"stop": stop}, daemon=True)
    if with_worker:
        worker.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}/v1", "base": f"http://127.0.0.1:{port}", "key": key, "settings": settings,
           "app": app}
    stop.set()
    server.should_exit = True
    thread.join(10)
    if with_worker:
        worker.join(30)


def assert_resumes_exactly(recipe, folder, kill_at: int) -> None:
    """Train `recipe` whole; train it again killed after step `kill_at`; resume that run: the same losses, step by
    step, to 1e-6 (exact resume: weights, optimizer, scheduler, RNG states and data position)."""
    from tuneloop.config.settings import get_settings
    from tuneloop.engine.loop import resume, train
    from tuneloop.models.run_folder import Step

    class Killed(Exception):
        pass

    def kill(event):
        if isinstance(event, Step) and event.step == kill_at:
            raise Killed()

    whole = train(recipe, get_settings(), folder / "whole")
    with pytest.raises(Killed):
        train(recipe, get_settings(), folder / "killed", listener=kill)
    assert resume(folder / "killed", get_settings()).losses == pytest.approx(whole.losses, abs=1e-6)
