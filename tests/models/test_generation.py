"""The one generation module: batched answers for offline callers equal the one-by-one answers."""

from __future__ import annotations

import pytest
import torch

from tuneloop.models.generation import GenerationOptions, complete, complete_batch

CONVERSATIONS = [[{"role": "user", "content": text}] for text in (
    "where is my order", "please reset my password because I cannot log in to my account",
    "refund", "the router keeps dropping the connection after the firmware update and the app shows an error",
    "thanks a lot")]


@pytest.fixture(scope="module")
def tiny(tiny_chat_model):
    """The tiny chat model with larger random weights, so that greedy answers differ from one prompt to
    the next (the fixture's own repeats one token)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0, 0.5)
    return model, AutoTokenizer.from_pretrained(tiny_chat_model)


def one_by_one(model, tokenizer, options):
    return [complete(model, tokenizer, messages, options) for messages in CONVERSATIONS]


def assert_same(batched, alone):
    assert [a.text for a in batched] == [a.text for a in alone]
    assert [(a.completion_tokens, a.finish_reason) for a in batched] == \
        [(a.completion_tokens, a.finish_reason) for a in alone]
    for one, other in zip(batched, alone):  # the same tokens, and their log-probabilities to 1e-4
        assert [e["token"] for e in one.logprobs] == [e["token"] for e in other.logprobs]
        assert all(abs(e["logprob"] - f["logprob"]) < 1e-4 for e, f in zip(one.logprobs, other.logprobs))


def test_batched_greedy_answers_equal_one_by_one(tiny):
    model, tokenizer = tiny
    options = GenerationOptions(max_tokens=12, logprobs=True)
    alone = one_by_one(model, tokenizer, options)
    assert len({a.text for a in alone}) > 1  # the prompts really get different answers
    assert_same(complete_batch(model, tokenizer, CONVERSATIONS, options, batch_size=3), alone)


def test_answers_that_end_early_in_a_batch_are_cut_at_their_end(tiny):
    model, tokenizer = tiny
    options = GenerationOptions(max_tokens=12, logprobs=True)
    tokens = [[e["token"] for e in a.logprobs] for a in one_by_one(model, tokenizer, options)]
    ending = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(tokens[0][3]))[0]  # row 0's fourth token
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = ending  # now an end of answer, for some rows sooner than others
    try:
        alone = one_by_one(model, tokenizer, options)
        assert alone[0].completion_tokens <= 4 and alone[0].finish_reason == "stop"
        assert len({a.completion_tokens for a in alone}) > 1
        assert_same(complete_batch(model, tokenizer, CONVERSATIONS, options, batch_size=5), alone)
    finally:
        model.generation_config.eos_token_id = saved


def test_stop_strings_are_for_complete_and_stream(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="no stop strings"):
        complete_batch(model, tokenizer, CONVERSATIONS, GenerationOptions(stop=["x"]))


def test_a_group_of_samples_reads_its_prompt_once_and_samples_the_same(tiny):
    """RL samples several completions per prompt: with `group`, each prompt's prefill runs once and its cache is
    repeated; greedy and seeded sampled answers are the tokens the plain batch gives."""
    from tuneloop.models.generation import complete_ids, encode_chat

    model, tokenizer = tiny
    prompts = [encode_chat(tokenizer, c)[0].tolist() for c in CONVERSATIONS[:3] for _ in range(3)]
    calls = []
    hook = model.model.register_forward_hook(lambda module, args, kwargs, out: calls.append(kwargs["input_ids"].shape)
                                             if kwargs.get("input_ids") is not None else None, with_kwargs=True)
    try:
        for options in (GenerationOptions(max_tokens=6), GenerationOptions(max_tokens=6, temperature=1.0, seed=5)):
            calls.clear()
            plain = complete_ids(model, tokenizer, prompts, options, batch_size=9)
            plain_calls = list(calls)
            calls.clear()
            grouped = complete_ids(model, tokenizer, prompts, options, batch_size=9, group=3)
            assert [a.token_ids for a in grouped] == [a.token_ids for a in plain]
            assert plain_calls[0][0] == 9 and calls[0][0] == 3  # the prompts' prefill: 3 rows, not 9
    finally:
        hook.remove()
