"""Our SFT loop and TRL's SFTTrainer, configured alike on the same data, give the same losses and
weights: the same completion-only token mean, AdamW, schedule and clipping; for full fine-tuning and
for LoRA (where our shared-prefix forward and fused LoRA layers are both in play)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.conftest import write_jsonl
from tuneloop.config.recipe import AdapterSection, parse_recipe
from tuneloop.engine.adapters import apply_adapter
from tuneloop.config.settings import get_settings
from tuneloop.engine.loop import Loop, run_loop

# ChatML without the newline after <|im_end|>: TRL's completion then ends at the end-of-turn token,
# exactly where our assistant span ends (with the newline TRL also trains on "\n"; see benchmarks/).
TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
            "'<|im_end|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
STEPS, LR = 4, 5e-3


def rows() -> list[dict]:
    return [{"prompt": [{"role": "system", "content": "you are a helpful assistant answer in one word"},
                        {"role": "user", "content": f"where is order {i} going"}],
             "completion": [{"role": "assistant", "content": f"the package {i} will arrive at the address"}]}
            for i in range(8)]


def trl_side(folder, tmp_path, adapter: str) -> tuple[list[float], dict[str, torch.Tensor]]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    losses: list[float] = []

    class Recording(SFTTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):  # the logged loss is rounded; keep it exact
            out = super().compute_loss(model, inputs, *args, **kwargs)
            losses.append(float((out[0] if isinstance(out, tuple) else out).detach()))
            return out

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    if adapter == "lora":  # the same LoRA, initialised from the same seed as our loop does
        torch.manual_seed(0)
        model = apply_adapter(model, AdapterSection(type="lora", r=4, alpha=8))
    config = SFTConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=8, max_steps=STEPS,
                       learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0,
                       weight_decay=0.0, logging_steps=1, save_strategy="no", report_to=[], max_length=128,
                       bf16=False, use_cpu=True, gradient_checkpointing=False, dataloader_num_workers=0, seed=0)
    trainer = Recording(model=model, args=config, train_dataset=Dataset.from_list(rows()),
                        processing_class=AutoTokenizer.from_pretrained(folder))
    trainer.train()
    return losses, {n: p.detach().clone() for n, p in model.named_parameters()}


def our_side(folder, tmp_path, adapter: str) -> tuple[list[float], dict[str, torch.Tensor]]:
    data = write_jsonl(tmp_path / "train.jsonl", [{"messages": r["prompt"] + r["completion"]} for r in rows()])
    recipe = parse_recipe({"model": str(folder), "data": {"train": str(data)}, "adapter": {"type": adapter, "r": 4, "alpha": 8},
                           "hyperparameters": {"max_steps": STEPS, "batch_size": 8, "learning_rate": LR,
                                               "scheduler": "constant", "warmup_ratio": 0, "max_grad_norm": 1.0,
                                               "max_length": 128, "precision": "fp32"},
                           "checkpoints": {"each_epoch": False}, "evaluation": {"each_epoch": False}})
    loop = Loop(recipe, tmp_path / "run", get_settings())
    result = run_loop(loop)
    return result.losses, {n: p.detach().clone() for n, p in loop.model.named_parameters()}


@pytest.mark.parametrize("adapter", ["full", "lora"])
def test_losses_and_weights_match_trl(tiny_chat_model, tmp_path, adapter):
    folder = tmp_path / "model"
    shutil.copytree(tiny_chat_model, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = TEMPLATE
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    from transformers import AutoTokenizer

    from tuneloop.engine.methods.sft import collate, shared_prefix_length
    from tuneloop.engine.tokenize import tokenize_messages

    tokenizer = AutoTokenizer.from_pretrained(folder)
    examples = [tokenize_messages(tokenizer, r["prompt"] + r["completion"], 128) for r in rows()]
    assert shared_prefix_length(collate(examples, tokenizer.pad_token_id)) >= 10  # the system prompt runs once
    theirs, their_weights = trl_side(folder, tmp_path, adapter)
    ours, our_weights = our_side(folder, tmp_path, adapter)
    assert len(ours) == len(theirs) == STEPS
    assert ours[-1] < ours[0]  # it trains
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(b)), f"step {step + 1}: ours {a} vs TRL {b}"
    assert our_weights.keys() == their_weights.keys()
    for name, weight in our_weights.items():
        assert torch.allclose(weight.cpu(), their_weights[name].cpu(), atol=1e-5), name  # TRL runs on the CPU
