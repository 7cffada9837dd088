"""Many fine-tuned adapters on one base: one copy of the base, adapters swapped per request (LRU),
each answering like its own model; concurrent requests queue without errors."""

from __future__ import annotations

import concurrent.futures

import torch

from tests.conftest import chat_rows, write_jsonl
from tuneloop.config.recipe import parse_recipe
from tuneloop.config.settings import get_settings
from tuneloop.engine.loop import train
from tuneloop.models.loading import load_causal_lm
from tuneloop.models import generation as chat
from tuneloop.serve.cache import ModelCache

MESSAGES = [{"role": "user", "content": "What is 5 plus 5?"}]


def adapter_runs(tiny_chat_model, tmp_path, n):
    data = write_jsonl(tmp_path / "train.jsonl", chat_rows(8))
    runs = []
    for i in range(n):
        recipe = parse_recipe({"model": str(tiny_chat_model), "data": {"train": str(data)}, "seed": i,
                               "adapter": {"type": "lora", "r": 4, "alpha": 8},
                               "hyperparameters": {"max_steps": 2, "batch_size": 4, "learning_rate": 5e-2},
                               "checkpoints": {"each_epoch": False}, "evaluation": {"each_epoch": False}})
        runs.append(train(recipe, get_settings(), tmp_path / f"run-{i}").run_dir)
    return runs


def greedy(model, tokenizer):
    return chat.complete(model, tokenizer, MESSAGES, chat.GenerationOptions(max_tokens=6, temperature=0)).text


def test_twenty_adapters_share_one_base(tiny_chat_model, tmp_path):
    runs = adapter_runs(tiny_chat_model, tmp_path, 20)
    cache = ModelCache(get_settings(), max_adapters=8)
    answers = {}
    for run in runs:
        with cache.using(str(run)) as (model, tokenizer):
            answers[run] = greedy(model, tokenizer)
            logits = model(chat.prompt_ids(model, tokenizer, MESSAGES)).logits
        alone, alone_tokenizer = load_causal_lm(str(run), get_settings())  # the adapter on a fresh base
        with torch.no_grad():
            assert torch.allclose(logits, alone(chat.prompt_ids(alone, alone_tokenizer, MESSAGES)).logits, atol=1e-5)
    assert cache.loaded() == {"bases": 1, "adapters": 8, "whole": 0}  # one base; the LRU keeps 8 adapters
    with cache.using(str(runs[0])) as (model, tokenizer):  # evicted long ago: loaded again, same answer
        assert greedy(model, tokenizer) == answers[runs[0]]
    with cache.using(str(tiny_chat_model)) as (model, tokenizer):  # the base itself, adapters switched off
        base, base_tokenizer = load_causal_lm(str(tiny_chat_model), get_settings())
        with torch.no_grad():
            ids = chat.prompt_ids(model, tokenizer, MESSAGES)
            assert torch.allclose(model(ids).logits, base(ids).logits, atol=1e-6)


def test_concurrent_requests_through_the_api(client, tiny_chat_model):
    def ask(i):
        return client.chat.completions.create(model=str(tiny_chat_model), messages=MESSAGES, max_tokens=4,
                                              temperature=0, stream=i % 2 == 0)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(ask, range(16)))
    texts = {r.choices[0].message.content for r in results[1::2]}
    streamed = {"".join(c.choices[0].delta.content or "" for c in r if c.choices) for r in results[0::2]}
    assert len(texts) == 1 and streamed == texts  # greedy: every request, streamed or not, the same answer
