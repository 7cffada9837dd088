"""Export a run's model: the adapter alone, or merged into its base as a standalone transformers folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tuneloop.config.settings import Settings
from tuneloop.models.loading import find_run_output, load_model, run_meta
from tuneloop.models.registry import ModelError

EXPORT_META = "tuneloop-export.json"


def export_run(run: str | Path, out: Path, settings: Settings, merge: bool = False) -> Path:
    """Write the run's model to `out` (which must not exist or be empty) and return it.

    merge=True: the adapter is merged into the base weights; plain `from_pretrained(out)` loads it
    (AutoModelForCausalLM, or AutoModelForSequenceClassification for a classification head).
    merge=False: the adapter files, tokenizer and run.json (tuneloop loads it on its base)."""
    final = find_run_output(str(run))
    if final is None:
        raise ModelError(f"{run} is not a training run (no final/run.json); train one with `tuneloop train`")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ModelError(f"{out} already exists and is not empty; choose a new folder")
    meta = run_meta(final)
    is_adapter = (final / "adapter_config.json").exists()
    if not merge:
        shutil.copytree(final, out, dirs_exist_ok=True)
    else:
        model, tokenizer = load_model(str(final), settings)
        if is_adapter:
            model = model.merge_and_unload()
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    (out / EXPORT_META).write_text(json.dumps({"run": str(final.parent), "merged": merge and is_adapter,
                                                **{k: getattr(meta, k) for k in ("base_model", "method", "adapter",
                                                                                 "classifier", "label_set", "steps")}},
                                               indent=1))
    return out
