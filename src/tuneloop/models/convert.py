"""Convert a GGUF model once to a safetensors folder, so later loads take about a second.

The folder holds a marker with the source's size, mtime and SHA-256; a changed checksum converts
again. The tokenizer converts on its own (seconds), so data checks do not wait for the weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

MARKER = "tuneloop-source.json"
StageFn = Callable[[str, int, int], None]
"""Called as (what is happening, step, total steps)."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _marker(target: Path) -> dict:
    try:
        return json.loads((target / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _source_checksum(source: Path, marker: dict) -> str:
    """The source's SHA-256; trusted from the marker while size and mtime are unchanged."""
    st = source.stat()
    if marker.get("size") == st.st_size and marker.get("mtime_ns") == st.st_mtime_ns and marker.get("sha256"):
        return marker["sha256"]
    return sha256_file(source)


def is_converted(source: Path, target: Path, part: str) -> bool:
    """Whether `part` ('tokenizer' or 'weights') of `target` was converted from this exact source."""
    marker = _marker(target)
    return bool(marker.get(part)) and marker.get("sha256") == _source_checksum(source, marker)


def _write_marker(source: Path, target: Path, parts: dict[str, bool]) -> None:
    st = source.stat()
    marker = {"source": str(source), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
              "sha256": _source_checksum(source, _marker(target)), **parts}
    (target / MARKER).write_text(json.dumps(marker, indent=1))


def _replace_dir(tmp: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(target)


def convert_tokenizer(source: Path, target: Path, on_stage: StageFn | None = None) -> Path:
    from transformers import AutoTokenizer

    if on_stage:
        on_stage("reading the tokenizer from GGUF", 0, 1)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    tokenizer.save_pretrained(tmp)
    _write_marker(source, tmp, {"tokenizer": True, "weights": False})
    _replace_dir(tmp, target)
    if on_stage:
        on_stage("tokenizer ready", 1, 1)
    return target


@contextlib.contextmanager
def _tensor_progress(on_stage: StageFn) -> Iterator[None]:
    """Report transformers' per-tensor de-quantisation to `on_stage` instead of its own tqdm bar."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    original = getattr(gguf_utils, "tqdm", None)

    def counted(iterable, **_):
        items = list(iterable)
        for i, item in enumerate(items):
            on_stage("de-quantising tensors", i, len(items))
            yield item

    if original is not None:
        gguf_utils.tqdm = counted
    try:
        yield
    finally:
        if original is not None:
            gguf_utils.tqdm = original


def convert_model(source: Path, target: Path, on_stage: StageFn | None = None) -> Path:
    """De-quantise every tensor of the GGUF file and write a float32 safetensors folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stage = on_stage or (lambda *_: None)
    stage("reading the tokenizer", 0, 1)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    with _tensor_progress(stage):
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    # The weights are plain float32 tensors now; drop the GGUF quantizer so the folder loads as a normal model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    stage("writing safetensors", 1, 1)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        stage("checksumming the source", 1, 1)
        _write_marker(source, tmp, {"tokenizer": True, "weights": True})
        _replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stage("converted", 1, 1)
    return target
