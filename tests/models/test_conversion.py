"""The real embedded chat model: GGUF converted once to safetensors answers exactly like the GGUF."""

from __future__ import annotations

import pytest

from tuneloop.config.settings import get_settings
from tuneloop.models.convert import is_converted
from tuneloop.models.loading import converted_dir, load_causal_lm, load_gguf_direct
from tuneloop.models.registry import resolve, source_path
from tuneloop.models.generation import GenerationOptions, complete

pytestmark = pytest.mark.real_model
PROMPT = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def test_converted_model_answers_like_the_gguf(home):
    spec = resolve("smollm2-135m-instruct")
    settings = get_settings()
    stages = []
    model, tokenizer = load_causal_lm(spec, settings, on_stage=lambda what, step, total: stages.append(what))
    assert "de-quantising tensors" in stages and "writing safetensors" in stages
    assert is_converted(source_path(spec), converted_dir(spec, settings), "weights")
    options = GenerationOptions(max_tokens=24)
    converted_answer = complete(model, tokenizer, PROMPT, options).text

    direct_model, direct_tokenizer = load_gguf_direct(spec)
    direct_answer = complete(direct_model, direct_tokenizer, PROMPT, options).text
    assert converted_answer == direct_answer
    assert "Paris" in converted_answer

    again = []
    load_causal_lm(spec, settings, on_stage=lambda *a: again.append(a))
    assert again == []  # the checksum matches: no second conversion
