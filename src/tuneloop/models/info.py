"""What `tuneloop models list` shows: parameters, size on disk, source and conversion state."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tuneloop.config.settings import Settings
from tuneloop.models.convert import is_converted
from tuneloop.models.loading import converted_dir
from tuneloop.models.registry import EMBEDDED, ModelError, ModelSpec, resolve, source_path


@dataclass
class ModelInfo:
    name: str
    kind: str
    parameters: int | None
    size_bytes: int | None
    source: str
    path: str | None
    converted: str
    """'yes', 'no', or 'n/a' (a model that needs no conversion)."""
    error: str | None = None

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def count_parameters(path: Path) -> int | None:
    """Parameters from file headers alone (GGUF tensor table or safetensors headers); no weights read."""
    if path.is_file() and path.suffix == ".gguf":
        from gguf import GGUFReader

        return int(sum(int(t.n_elements) for t in GGUFReader(path).tensors))
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if not files:
        return None
    total = 0
    for file in files:
        with file.open("rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_len))
        for name, entry in header.items():
            if name != "__metadata__":
                n = 1
                for dim in entry["shape"]:
                    n *= dim
                total += n
    return total


def describe(spec: ModelSpec, settings: Settings) -> ModelInfo:
    try:
        source = source_path(spec)
    except ModelError as e:
        return ModelInfo(spec.name, spec.kind, None, None, spec.source, None, "n/a", str(e))
    if spec.is_gguf:
        target = converted_dir(spec, settings)
        converted = "yes" if is_converted(source, target, "weights") else "no"
    else:
        converted = "n/a"
    if spec.source == "embedded":
        where = f"pip: {spec.package.replace('_', '-')}" + (" (GGUF)" if spec.is_gguf else "")
    else:
        where = str(source)
    return ModelInfo(spec.name, spec.kind, count_parameters(source), _size(source), where, str(source), converted)


def list_models(settings: Settings) -> list[ModelInfo]:
    """The embedded models, then any other model folders under $TUNELOOP_HOME/models."""
    infos = [describe(spec, settings) for spec in EMBEDDED.values()]
    if settings.models_dir.is_dir():
        for folder in sorted(settings.models_dir.iterdir()):
            if folder.name not in EMBEDDED and (folder / "config.json").exists():
                infos.append(describe(resolve(str(folder)), settings))
    return infos
