"""The fused LoRA forward gives peft's outputs and gradients, and leaves saving and merging alone."""

from __future__ import annotations

import torch

from tests.conftest import chat_rows
from tuneloop.config.recipe import AdapterSection
from tuneloop.engine.adapters import apply_adapter
from tuneloop.engine.fast_lora import speed_up_lora
from tuneloop.engine.methods.sft import collate, sft_loss
from tuneloop.engine.tokenize import tokenize_messages


def lora_model(tiny_chat_model, **adapter):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = apply_adapter(AutoModelForCausalLM.from_pretrained(tiny_chat_model),
                          AdapterSection(**{"type": "lora", "r": 4, "alpha": 8, **adapter}))
    with torch.no_grad():  # B starts at zero; give it values so the adapter path matters
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    return model


def loss_and_grads(model, batch):
    model.zero_grad()
    total, n = sft_loss(model, batch)
    (total / n).backward()
    return float(total / n), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}


def test_same_loss_and_gradients_as_peft(tiny_chat_model, tiny_tokenizer):
    batch = collate([tokenize_messages(tiny_tokenizer, r["messages"], 512) for r in chat_rows(4)],
                    tiny_tokenizer.pad_token_id)
    peft_model, fast_model = lora_model(tiny_chat_model), lora_model(tiny_chat_model)
    assert speed_up_lora(fast_model) == 14  # 7 linear layers x 2 blocks
    expected, fast = loss_and_grads(peft_model, batch), loss_and_grads(fast_model, batch)
    assert abs(expected[0] - fast[0]) < 1e-6
    assert expected[1].keys() == fast[1].keys()
    for name, grad in expected[1].items():
        assert torch.allclose(grad, fast[1][name], atol=1e-6), name


def test_dropout_and_dora_keep_pefts_forward(tiny_chat_model):
    assert speed_up_lora(lora_model(tiny_chat_model, dropout=0.1)) == 0
    assert speed_up_lora(lora_model(tiny_chat_model, type="dora")) == 0


def test_disabled_and_merged_adapters_still_behave(tiny_chat_model, tiny_tokenizer):
    model = lora_model(tiny_chat_model)
    speed_up_lora(model)
    ids = tiny_tokenizer("where is my order", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        adapted = model(ids).logits
        with model.disable_adapter():
            base = model(ids).logits
        merged = model.merge_and_unload()(ids).logits
    assert not torch.allclose(adapted, base, atol=1e-4)
    assert torch.allclose(adapted, merged, atol=1e-5)
