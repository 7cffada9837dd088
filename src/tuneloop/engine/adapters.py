"""Put an adapter on a model: LoRA, DoRA, IA3 (peft), full fine-tuning, or freeze all but the top."""

from __future__ import annotations

from typing import Any

import torch

from tuneloop.config.recipe import AdapterSection


class AdapterError(ValueError):
    """An adapter cannot be used here; the message says why and what to use instead."""


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


PEFT_TYPES = {"lora": "LORA", "dora": "LORA", "ia3": "IA3"}


def continues(model: Any, adapter: AdapterSection) -> bool:
    """Whether `model` carries a previous run's adapter that this adapter section continues: the same
    type (and for LoRA/DoRA the same rank) continues it; anything else merges it into the base first."""
    config = getattr(model, "peft_config", {}).get("default")
    if config is None or PEFT_TYPES.get(adapter.type) != config.peft_type.value:
        return False
    if config.peft_type.value == "LORA":
        return config.r == adapter.r and bool(config.use_dora) == (adapter.type == "dora")
    return True


def check_qlora() -> None:
    """QLoRA needs a CUDA GPU and bitsandbytes; say so before any model is loaded."""
    if not _cuda_available():
        raise AdapterError("adapter.type 'qlora' loads the base in 4 bits with bitsandbytes, which needs a CUDA "
                           "GPU; none is present here. Use 'lora' (same adapter, full-precision base) instead")
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise AdapterError("adapter.type 'qlora' needs the bitsandbytes package: pip install 'tuneloop[gpu]'")


def apply_adapter(model: Any, adapter: AdapterSection, task_type: str = "CAUSAL_LM") -> Any:
    """Return the model to train, with exactly the parameters to train left trainable.

    A model that already carries a previous run's adapter (sequential fine-tuning) keeps training
    that adapter when `continues` says so; otherwise the old adapter is merged into the base first."""
    if hasattr(model, "peft_config"):
        if continues(model, adapter):
            for name, p in model.named_parameters():
                p.requires_grad_(".default." in name + ".")  # the adapter's own weights (and saved heads)
            return model
        model = model.merge_and_unload()
    if adapter.type == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if adapter.type == "freeze":
        return _freeze(model, adapter.trainable_layers)
    if adapter.type == "qlora":
        # The 4-bit base stays as loaded, its other weights (embeddings, norms) in bf16. peft's
        # prepare_model_for_kbit_training would turn those to fp32, and with them the whole residual
        # stream: on an H100 that cost a third of the speed and raised peak memory above bf16 LoRA's.
        check_qlora()
    from peft import IA3Config, LoraConfig, get_peft_model

    if adapter.type == "ia3":
        targets = _linear_names(model) if adapter.target_modules == "all-linear" else adapter.target_modules
        config = IA3Config(task_type=task_type, target_modules=targets,
                           feedforward_modules=[n for n in ("down_proj", "fc2", "w2", "output.dense") if n in targets])
    else:
        targets = adapter.target_modules
        if targets == "all-linear" and task_type == "TOKEN_CLS":  # peft's all-linear would take the token head too
            targets = _linear_names(model)
        config = LoraConfig(task_type=task_type, r=adapter.r, lora_alpha=adapter.alpha,
                            lora_dropout=adapter.dropout, target_modules=targets,
                            use_dora=adapter.type == "dora")
    return get_peft_model(model, config)


def _linear_names(model: Any) -> list[str]:
    """Names of the linear layers inside the transformer blocks (what 'all-linear' means), spelled out:
    a saved IA3 adapter must name its feed-forward layers among its targets to load again."""
    head = model.get_output_embeddings()
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head and not name.endswith(("score", "classifier")):
            parts = name.split(".")
            names.add(".".join(parts[-2:]) if parts[-1] == "dense" else parts[-1])
    return sorted(names)


def _head(model: Any) -> Any:
    """The output layer: the LM head, or a classification head ('score', 'classifier')."""
    head = model.get_output_embeddings()
    for name in ("score", "classifier"):
        if head is None and isinstance(getattr(model, name, None), torch.nn.Module):
            head = getattr(model, name)
    if head is None:
        raise AdapterError("adapter.type 'freeze' needs a model with an output head")
    return head


def _layers(model: Any) -> list[Any]:
    """The transformer blocks, wherever the architecture keeps them (model.layers, encoder.layer...)."""
    count = getattr(model.config, "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return list(module)
    raise AdapterError("adapter.trainable_layers: cannot find this model's list of transformer layers")


def _freeze(model: Any, trainable_layers: int) -> Any:
    """Feature extraction: freeze the base; train the output head and the last `trainable_layers` layers."""
    for p in model.parameters():
        p.requires_grad_(False)
    head = _head(model)
    for p in head.parameters():
        p.requires_grad_(True)
    for layer in _layers(model)[-trainable_layers:] if trainable_layers else []:
        for p in layer.parameters():
            p.requires_grad_(True)
    if head is model.get_output_embeddings() and getattr(model.config, "tie_word_embeddings", False):
        # a tied head shares its weight with the input embeddings: training it trains both
        model.get_input_embeddings().weight.requires_grad_(True)
    return model


def count_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
