"""Load base models and tokenizers from the registry: embedded, local folders, GGUF files, hub ids."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tuneloop.config.settings import Settings
from tuneloop.models.convert import StageFn, convert_model, convert_tokenizer, is_converted
from tuneloop.models.registry import ModelError, ModelSpec, local_path, resolve, source_path
from tuneloop.models.run_folder import RunMeta, find_final


def quiet_transformers() -> None:
    """Our own progress bars report loading; transformers' tqdm bars and advisories would interleave."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def converted_dir(spec: ModelSpec, settings: Settings) -> Path:
    return settings.models_dir / spec.name


def hub_snapshot(spec: ModelSpec, settings: Settings) -> Path:
    """The local folder of a hub model: from the Hugging Face cache, or downloaded when online."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    advice = (f"download it on a machine with network access (`hf download {spec.hub_id} --local-dir DIR`), "
              "copy DIR here, and pass DIR instead of the hub id")
    try:
        return Path(snapshot_download(spec.hub_id, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    except Exception as e:  # noqa: BLE001 - any cache error means "not usable offline"
        raise ModelError(f"hub model '{spec.hub_id}' is not usable from the local cache ({e}); {advice}") from e
    if settings.offline or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelError(f"hub model '{spec.hub_id}' is not in the local cache and TUNELOOP_OFFLINE is set; {advice}")
    try:
        return Path(snapshot_download(spec.hub_id, etag_timeout=10))
    except Exception as e:  # noqa: BLE001 - network failures come in many types
        raise ModelError(f"could not download '{spec.hub_id}' from the Hugging Face Hub (no network?): "
                         f"{type(e).__name__}; {advice}") from e


def tokenizer_dir(spec: ModelSpec, settings: Settings, on_stage: StageFn | None = None) -> Path:
    """A folder AutoTokenizer loads from; converts a GGUF tokenizer on first use."""
    quiet_transformers()
    if not spec.is_gguf:
        return model_dir(spec, settings, on_stage)
    source, target = source_path(spec), converted_dir(spec, settings)
    if not (is_converted(source, target, "tokenizer")):
        convert_tokenizer(source, target, on_stage)
    return target


def model_dir(spec: ModelSpec, settings: Settings, on_stage: StageFn | None = None) -> Path:
    """A folder from_pretrained loads from; converts a GGUF model once (checksum decides when again)."""
    quiet_transformers()
    if spec.source == "hub":
        return hub_snapshot(spec, settings)
    source = source_path(spec)
    if not spec.is_gguf:
        if not source.exists():
            raise ModelError(f"model '{spec.name}': {source} does not exist")
        return source
    target = converted_dir(spec, settings)
    if not is_converted(source, target, "weights"):
        convert_model(source, target, on_stage)
    return target


def load_tokenizer(ref: str | ModelSpec, settings: Settings, on_stage: StageFn | None = None) -> Any:
    from transformers import AutoTokenizer

    spec = resolve(ref) if isinstance(ref, str) else ref
    return AutoTokenizer.from_pretrained(tokenizer_dir(spec, settings, on_stage))


def load_causal_lm(ref: str | ModelSpec, settings: Settings, dtype: Any = None,
                   on_stage: StageFn | None = None, four_bit: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) of a model that generates text; a clear error for an encoder.
    four_bit: the base in NF4 with bitsandbytes on the current CUDA device (for QLoRA)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(ref, str) and (run_final := find_run_output(ref)) is not None:
        return load_run_output(run_final, settings, dtype, on_stage)
    spec = resolve(ref) if isinstance(ref, str) else ref
    if spec.kind == "encoder":
        raise ModelError(f"'{spec.name}' is an encoder; it cannot generate text. Use a chat model such as "
                         "smollm2-135m-instruct (encoders are for classification and embeddings)")
    folder = model_dir(spec, settings, on_stage)
    extra: dict[str, Any] = {}
    if four_bit:
        from transformers import BitsAndBytesConfig

        extra = {"quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16), "device_map": {"": torch.cuda.current_device()}}
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or (torch.bfloat16 if four_bit else torch.float32),
                                                 **extra)
    model.eval()
    return model, AutoTokenizer.from_pretrained(folder)


def load_gguf_direct(spec: ModelSpec, dtype: Any = None) -> tuple[Any, Any]:
    """Load a GGUF model straight from the file, de-quantising in memory (slow; used to check conversion)."""
    quiet_transformers()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = source_path(spec)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=dtype or torch.float32)
    model.eval()
    return model, AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)


ENCODER_TYPES = {"bert", "roberta", "xlm-roberta", "distilbert", "deberta", "deberta-v2", "electra", "mpnet",
                 "albert", "modernbert"}


def find_run_output(ref: str) -> Path | None:
    """The `final` folder of a training run (given the run folder or the final folder itself)."""
    path = local_path(ref)
    return None if path is None else find_final(path)


def run_meta(final: Path) -> RunMeta:
    return RunMeta.read(final)


def model_kind(ref: str, settings: Settings) -> str:
    """'chat', 'causal', 'encoder', 'classifier' (a run that trained a classification head), 'token-classifier' (a
    run that trained a token-classification head), or 'reward' (a reward model)."""
    if (final := find_run_output(ref)) is not None:
        meta = run_meta(final)
        if meta.has_token_head:
            return "token-classifier"
        if meta.is_reward:
            return "reward"
        return "classifier" if meta.has_head else model_kind(meta.base_model, settings)
    return resolve(ref).kind


def _base_of(model: Any) -> Any:
    """A model with any previous run's adapter merged in: the weights a new adapter trains on."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def load_run_output(final: Path, settings: Settings, dtype: Any = None,
                    on_stage: StageFn | None = None) -> tuple[Any, Any]:
    """A fine-tuned model: its base with the adapter applied, or the fully trained weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    meta = run_meta(final)
    if meta.is_reward:
        raise ModelError(f"{final.parent} is a reward model; it scores answers (`tuneloop eval` on preference pairs, "
                         "POST /api/rewards) but cannot generate text")
    if meta.has_head or meta.has_token_head:
        raise ModelError(f"{final.parent} trained a classification head; it classifies but cannot generate "
                         "text (`tuneloop eval` scores it)")
    tokenizer = AutoTokenizer.from_pretrained(final)  # the template the run trained with
    if (final / "adapter_config.json").exists():
        from peft import PeftModel

        base, _ = load_causal_lm(meta.base_model, settings, dtype, on_stage)
        model = PeftModel.from_pretrained(_base_of(base), final)
    else:
        model = AutoModelForCausalLM.from_pretrained(final, dtype=dtype or torch.float32)
    model.eval()
    return model, tokenizer


def load_sequence_classifier(ref: str, settings: Settings, labels: list[str] | None = None, dtype: Any = None,
                             on_stage: StageFn | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) with a sequence-classification head: a trained run's head, or a new one over
    `labels` on an encoder or a decoder (its last token)."""
    return _load_with_head(ref, settings, labels, dtype, on_stage, token=False)


def load_token_classifier(ref: str, settings: Settings, tags: list[str] | None = None, dtype: Any = None,
                          on_stage: StageFn | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) with a token-classification head: a trained run's, or a new one over the BIO `tags`
    on an encoder or a decoder."""
    return _load_with_head(ref, settings, tags, dtype, on_stage, token=True)


def _load_with_head(ref: str, settings: Settings, labels: list[str] | None, dtype: Any, on_stage: StageFn | None,
                    token: bool) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    quiet_transformers()
    auto = AutoModelForTokenClassification if token else AutoModelForSequenceClassification
    what = "token-classification" if token else "classification"
    if (final := find_run_output(ref)) is not None:
        meta = run_meta(final)
        if not (meta.has_token_head if token else meta.has_head):
            raise ModelError(f"{ref} is a {meta.method} run without a {what} head; train a head on "
                             f"its base model '{meta.base_model}' instead")
        tokenizer = AutoTokenizer.from_pretrained(final)
        if (final / "adapter_config.json").exists():
            from peft import PeftModel

            base, _ = _load_with_head(meta.base_model, settings, meta.label_set, dtype, on_stage, token)
            model = PeftModel.from_pretrained(_base_of(base), final)
        else:
            model = auto.from_pretrained(final, dtype=dtype or torch.float32)
        model.eval()
        return model, tokenizer
    spec = resolve(ref)
    folder = model_dir(spec, settings, on_stage)
    if not labels:
        how = ("tuneloop train --method token_classify --model {ref} --data spans.jsonl" if token else
               "tuneloop train --method classify --model {ref} --data labelled.jsonl").format(ref=ref)
        raise ModelError(f"'{spec.name}' has no trained {what} head; train one first: {how}")
    model = auto.from_pretrained(
        folder, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)}, dtype=dtype or torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


def load_model(ref: str, settings: Settings, dtype: Any = None, on_stage: StageFn | None = None) -> tuple[Any, Any]:
    """Whatever a reference names, ready to use: a trained classifier, or a causal LM (with its adapter)."""
    kind = model_kind(ref, settings)
    if kind in {"classifier", "reward"}:
        return load_sequence_classifier(ref, settings, dtype=dtype, on_stage=on_stage)
    if kind == "token-classifier":
        return load_token_classifier(ref, settings, dtype=dtype, on_stage=on_stage)
    return load_causal_lm(ref, settings, dtype, on_stage)
