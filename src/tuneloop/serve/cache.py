"""Models ready to answer. Each base model is loaded once; fine-tuned LoRA adapters are loaded onto
it by name and switched per request (an LRU bounds how many stay loaded), so twenty fine-tuned
models cost one base plus twenty small adapters. Requests run one at a time (they queue on a lock)."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from tuneloop.config.settings import Settings
from tuneloop.models.loading import find_run_output, load_causal_lm, load_tokenizer, run_meta


class ModelCache:
    def __init__(self, settings: Settings, max_adapters: int = 16, max_whole: int = 2):
        self.settings, self.max_adapters, self.max_whole = settings, max_adapters, max_whole
        self.lock = threading.Lock()
        self.generation = ThreadPoolExecutor(max_workers=8, thread_name_prefix="chat-generate")
        """Where answers are generated, streamed or not: a bounded pool (requests beyond it wait in its queue,
        holding no thread), apart from the pool that serves every other request."""
        self.bases: dict[str, Any] = {}                       # base ref -> model (a PeftModel once it has adapters)
        self.tokenizers: dict[str, Any] = {}
        self.adapters: OrderedDict[str, str] = OrderedDict()  # adapter name -> base ref, least recent first
        self.whole: OrderedDict[str, Any] = OrderedDict()     # fully fine-tuned or merged-chain models

    @contextmanager
    def using(self, ref: str) -> Iterator[tuple[Any, Any]]:
        """(model, tokenizer) with the right adapter active, held for the whole request."""
        with self.lock:
            final = find_run_output(ref)
            if final is None:
                model = self._base(ref)
                off = model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()
                with off:
                    yield model, self._tokenizer(ref, None)
                return
            meta = run_meta(final)
            if (final / "adapter_config.json").exists() and find_run_output(meta.base_model) is None:
                yield self._with_adapter(meta.base_model, final), self._tokenizer(ref, final)
                return
            key = str(final.resolve())
            if key not in self.whole:
                self.whole[key] = load_causal_lm(str(final), self.settings)[0]
                while len(self.whole) > self.max_whole:
                    self.whole.popitem(last=False)
            self.whole.move_to_end(key)
            yield self.whole[key], self._tokenizer(ref, final)

    def _base(self, ref: str) -> Any:
        if ref not in self.bases:
            self.bases[ref] = load_causal_lm(ref, self.settings)[0]
        return self.bases[ref]

    def _tokenizer(self, ref: str, final: Path | None) -> Any:
        key = str(final) if final is not None else ref
        if key not in self.tokenizers:
            if final is not None:
                from transformers import AutoTokenizer

                self.tokenizers[key] = AutoTokenizer.from_pretrained(final)
            else:
                self.tokenizers[key] = load_tokenizer(ref, self.settings)
        return self.tokenizers[key]

    def _with_adapter(self, base_ref: str, final: Path) -> Any:
        from peft import PeftModel

        name = "a" + hashlib.sha1(str(final.resolve()).encode()).hexdigest()[:16]
        model = self._base(base_ref)
        if name not in self.adapters:
            if isinstance(model, PeftModel):
                model.load_adapter(str(final), adapter_name=name)
            else:
                model = self.bases[base_ref] = PeftModel.from_pretrained(model, str(final), adapter_name=name)
            self.adapters[name] = base_ref
            while len(self.adapters) > self.max_adapters:
                old, old_base = self.adapters.popitem(last=False)
                self.bases[old_base].delete_adapter(old)
        self.adapters.move_to_end(name)
        model.set_adapter(name)
        model.eval()
        return model

    def loaded(self) -> dict[str, int]:
        return {"bases": len(self.bases), "adapters": len(self.adapters), "whole": len(self.whole)}
