"""Loss masks: assistant answers only, weight 0 honoured, or everything with train_on=all."""

from __future__ import annotations

from tuneloop.engine.tokenize import IGNORE, tokenize_messages

CONVERSATION = [{"role": "user", "content": "where is my order"},
                {"role": "assistant", "content": "the package will arrive", "weight": 0},
                {"role": "user", "content": "please reset my password"},
                {"role": "assistant", "content": "the code never comes"}]


def learned_text(tokenizer, example):
    return tokenizer.decode([t for t, label in zip(example.input_ids, example.labels) if label != IGNORE])


def test_only_the_weighted_assistant_answer_and_its_end_token_are_learned(tiny_tokenizer):
    example = tokenize_messages(tiny_tokenizer, CONVERSATION, max_length=512)
    assert learned_text(tiny_tokenizer, example) == "the code never comes<|im_end|>"
    assert len(example.labels) == len(example.input_ids)


def test_weight_one_answers_are_all_learned(tiny_tokenizer):
    both = [dict(m, weight=1) if m["role"] == "assistant" else m for m in CONVERSATION]
    text = learned_text(tiny_tokenizer, tokenize_messages(tiny_tokenizer, both, max_length=512))
    assert text == "the package will arrive<|im_end|>the code never comes<|im_end|>"


def test_train_on_all_learns_every_token(tiny_tokenizer):
    example = tokenize_messages(tiny_tokenizer, CONVERSATION, max_length=512, train_on="all")
    assert example.labels == example.input_ids


def test_truncation_keeps_the_start(tiny_tokenizer):
    example = tokenize_messages(tiny_tokenizer, CONVERSATION, max_length=10)
    full = tokenize_messages(tiny_tokenizer, CONVERSATION, max_length=512)
    assert example.input_ids == full.input_ids[:10] and example.n_target_tokens == 0


def test_tokens_after_the_last_target_are_not_kept(tiny_tokenizer):
    """They cannot change the loss (attention is causal), so they are never computed."""
    example = tokenize_messages(tiny_tokenizer, CONVERSATION, max_length=512)
    assert tiny_tokenizer.decode(example.input_ids).endswith("the code never comes<|im_end|>")
    first_only = [CONVERSATION[0], dict(CONVERSATION[1], weight=1), CONVERSATION[2], dict(CONVERSATION[3], weight=0)]
    cut = tokenize_messages(tiny_tokenizer, first_only, max_length=512)
    assert tiny_tokenizer.decode(cut.input_ids).endswith("the package will arrive<|im_end|>")
    assert cut.labels[-1] != IGNORE
