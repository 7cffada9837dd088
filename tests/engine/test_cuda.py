"""The training loop on a CUDA GPU: QLoRA on a 4-bit base and LoRA on a bf16 base (the rest of tests/engine
runs on the GPU too when one is present: determinism, exact resume, every adapter).

Skipped where no CUDA GPU is present (CI); on a GPU machine: `pip install -e ".[dev,gpu]"`, then pytest.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import chat_rows, write_jsonl
from tests.engine.test_loop import recipe
from tuneloop.config.settings import get_settings
from tuneloop.engine.export import export_run
from tuneloop.engine.loop import Loop, run_loop
from tuneloop.models.loading import load_run_output

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def train_file(tmp_path):
    return write_jsonl(tmp_path / "train.jsonl", chat_rows(24))


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_qlora_trains_an_adapter_on_a_4bit_base(tiny_chat_model, train_file, tmp_path):
    import bitsandbytes as bnb

    r = recipe(tiny_chat_model, train_file, adapter={"type": "qlora", "r": 4, "alpha": 8, "dropout": 0.0},
               hyperparameters={"max_steps": 8, "warmup_ratio": 0, "precision": "auto"})
    loop = Loop(r, tmp_path / "q", get_settings())
    loop.setup()
    four_bit = [m for m in loop.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert four_bit and all(m.weight.device.type == "cuda" for m in four_bit)
    before = _snapshot(loop.model)
    trainable = {n for n, p in loop.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # the rest of the base stays in bf16 (no fp32 residual stream); the adapter trains in fp32
    floats = {n: p.dtype for n, p in loop.model.named_parameters() if p.dtype.is_floating_point}
    assert {d for n, d in floats.items() if "lora_" in n} == {torch.float32}
    assert {d for n, d in floats.items() if "lora_" not in n} == {torch.bfloat16}
    result = run_loop(loop)
    after = dict(loop.model.named_parameters())
    assert not [n for n in trainable if torch.equal(before[n], after[n])]
    assert not [n for n in before if n not in trainable and not torch.equal(before[n], after[n])]
    assert result.steps == 8 and result.losses[-1] < result.losses[0]
    final = tmp_path / "q" / "final"
    assert json.loads((final / "adapter_config.json").read_text())["peft_type"] == "LORA"

    # the adapter loads on the full-precision base, and merges into a standalone folder
    model, tokenizer = load_run_output(final, get_settings())
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    merged = export_run(tmp_path / "q", tmp_path / "merged", get_settings(), merge=True)
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(merged)
    ids = tokenizer("the order is late", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(plain(ids).logits, model(input_ids=ids).logits, atol=1e-4)


def test_lora_on_cuda_holds_the_base_in_bf16_and_the_adapter_in_fp32(tiny_chat_model, train_file, tmp_path):
    r = recipe(tiny_chat_model, train_file, adapter={"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
               hyperparameters={"max_steps": 6, "precision": "bf16"})
    loop = Loop(r, tmp_path / "bf16", get_settings())
    loop.setup()
    dtypes = {n: p.dtype for n, p in loop.model.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}
    assert {d for n, d in dtypes.items() if "lora_" not in n} == {torch.bfloat16}
    result = run_loop(loop)
    assert all(torch.isfinite(torch.tensor(result.losses))) and result.losses[-1] < result.losses[0]
    assert {v.dtype for v in load_file(tmp_path / "bf16" / "final" / "adapter_model.safetensors").values()} == {
        torch.float32}

