"""Batched label likelihood (`label_logprobs_batch`) equals the one-prompt-at-a-time path (`label_logprobs`)."""

import pytest
import torch

from tuneloop.engine.methods.classify import (classification_prompt_ids, common_prefix, label_logprobs,
                                              label_logprobs_batch, label_token_ids, softmax)

TEXTS = ["my invoice is wrong", "the parcel never came and nobody answers the phone at all",
         "refund", "how do I reset my password on the app when the email link has expired already",
         "charged twice", "the box arrived crushed", "login fails", "where is my order",
         "I want my money back for the second charge this month"]


def load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("labels", [["billing", "shipping", "account"], ["billing issue", "late parcel delivery", "x"]])
def test_batched_scores_equal_one_prompt_at_a_time(tiny_chat_model, labels):
    model, tokenizer = load(tiny_chat_model)
    ids = label_token_ids(tokenizer, labels)
    assert len({len(i) for i in ids}) > 1 or labels[0] == "billing"  # the second set mixes label lengths
    prompts = [classification_prompt_ids(tokenizer, t, labels) for t in TEXTS]
    assert common_prefix(prompts) > 5, "the system message is a shared prefix"
    reference = [label_logprobs(model, tokenizer, t, labels, ids) for t in TEXTS]
    batched = label_logprobs_batch(model, tokenizer, prompts, ids, batch_size=4)
    for ref, got in zip(reference, batched):
        assert got == pytest.approx(ref, rel=1e-6)   # log-probabilities near -80 on this random model: float32's
        assert softmax(got) == pytest.approx(softmax(ref), abs=1e-5)


def test_prompts_without_a_shared_prefix_and_a_lora_adapter(tiny_chat_model):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load(tiny_chat_model)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                             init_lora_weights=False)).eval()
    labels = ["yes", "no"]
    ids = label_token_ids(tokenizer, labels)
    prompts = [tokenizer(t)["input_ids"] for t in TEXTS]           # raw texts: nothing in common
    assert common_prefix(prompts) == 0
    for prompt, got in zip(prompts, label_logprobs_batch(model, tokenizer, prompts, ids, batch_size=3)):
        with torch.no_grad():
            out = model(input_ids=torch.tensor([prompt + ids[0]])).logits[0].log_softmax(-1)
        expected = sum(float(out[len(prompt) - 1 + j, tok]) for j, tok in enumerate(ids[0]))
        assert got[0] == pytest.approx(expected, rel=1e-6)


def test_common_prefix_leaves_each_prompt_its_last_token():
    assert common_prefix([[1, 2, 3], [1, 2, 3]]) == 2
    assert common_prefix([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert common_prefix([[1, 2]]) == 0
    assert common_prefix([[7, 2], [8, 2]]) == 0
