"""Put an adapter on a model: LoRA, DoRA, IA3 (peft), full fine-tuning, or freeze all but the top."""

from __future__ import annotations

from typing import Any

from tuneloop.config.recipe import AdapterSection


class AdapterError(ValueError):
    """An adapter cannot be used here; the message says why and what to use instead."""


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def apply_adapter(model: Any, adapter: AdapterSection) -> Any:
    """Return the model to train, with exactly the parameters to train left trainable."""
    if adapter.type == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if adapter.type == "freeze":
        return _freeze(model, adapter.trainable_layers)
    if adapter.type == "qlora":
        if not _cuda_available():
            raise AdapterError("adapter.type 'qlora' loads the base in 4 bits with bitsandbytes, which needs a CUDA "
                               "GPU; none is present here. Use 'lora' (same adapter, full-precision base) instead")
        raise AdapterError("adapter.type 'qlora' is not available in this build yet; use 'lora'")
    from peft import IA3Config, LoraConfig, get_peft_model

    if adapter.type == "ia3":
        targets = adapter.target_modules
        config = IA3Config(task_type="CAUSAL_LM", target_modules=targets,
                           feedforward_modules=_feedforward(model, targets))
    else:
        config = LoraConfig(task_type="CAUSAL_LM", r=adapter.r, lora_alpha=adapter.alpha,
                            lora_dropout=adapter.dropout, target_modules=adapter.target_modules,
                            use_dora=adapter.type == "dora")
    return get_peft_model(model, config)


def _feedforward(model: Any, targets: Any) -> list[str]:
    """IA3 scales the inputs of feed-forward layers and the outputs of the others."""
    names = {name.split(".")[-1] for name, _ in model.named_modules()}
    feedforward = [n for n in ("down_proj", "fc2", "w2") if n in names]
    if targets == "all-linear":
        return feedforward
    return [n for n in feedforward if n in targets]


def _freeze(model: Any, trainable_layers: int) -> Any:
    """Feature extraction: freeze the base; train the output head and the last `trainable_layers` layers."""
    for p in model.parameters():
        p.requires_grad_(False)
    head = model.get_output_embeddings()
    if head is None:
        raise AdapterError("adapter.type 'freeze' needs a model with an output head")
    for p in head.parameters():
        p.requires_grad_(True)
    layers = getattr(getattr(model, "model", model), "layers", None)
    if trainable_layers and layers is None:
        raise AdapterError("adapter.trainable_layers needs a model whose layers are at model.layers")
    for layer in list(layers or [])[len(layers or []) - trainable_layers:] if trainable_layers else []:
        for p in layer.parameters():
            p.requires_grad_(True)
    if getattr(model.config, "tie_word_embeddings", False):
        # a tied head shares its weight with the input embeddings: training it trains both
        model.get_input_embeddings().weight.requires_grad_(True)
    return model


def count_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
