"""Importing stores a version keyed by its content; the same content gives the same version."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tests.conftest import labelled_rows, write_jsonl
from tuneloop.cli.main import app
from tuneloop.data.versions import list_imports, resolve_version

runner = CliRunner()


def import_(path, tiny_chat_model, *extra):
    return runner.invoke(app, ["data", "import", str(path), "--model", str(tiny_chat_model), "--json", *extra])


def test_same_content_same_version_and_nothing_overwritten(tmp_path, home, tiny_chat_model):
    src = write_jsonl(tmp_path / "tickets.jsonl", labelled_rows())
    first = import_(src, tiny_chat_model)
    assert first.exit_code == 0, first.output
    v1 = json.loads(first.stdout)
    assert v1["new"] and v1["examples"] == 12
    records_file = home / "datasets" / v1["version"] / "records.jsonl"
    stamp = records_file.stat().st_mtime_ns

    # the same examples as CSV: same content, same version, the stored files untouched
    csv = tmp_path / "tickets.csv"
    csv.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in labelled_rows()))
    again = json.loads(import_(csv, tiny_chat_model).stdout)
    assert again["version"] == v1["version"] and not again["new"]
    assert records_file.stat().st_mtime_ns == stamp

    changed = labelled_rows()
    changed[0]["label"] = "technical"
    v2 = json.loads(import_(write_jsonl(tmp_path / "tickets.jsonl", changed), tiny_chat_model).stdout)
    assert v2["version"] != v1["version"] and v2["new"]

    meta = json.loads((home / "datasets" / v1["version"] / "meta.json").read_text())
    assert meta["stats"]["labels"] == {"billing": 4, "shipping": 4, "technical": 4}
    assert meta["stats"]["tokens"]["max"] > 0 and meta["lines"][:3] == [1, 2, 3]
    assert [e["version"] for e in list_imports(home / "datasets")] == [v1["version"]] * 2 + [v2["version"]]
    assert resolve_version(home / "datasets", "tickets").id == v2["version"]  # a name means its latest import
    stored = resolve_version(home / "datasets", v1["version"]).records()
    assert stored[0][1].labels == ["billing"] and len(stored) == 12


def test_a_file_with_errors_is_not_imported_and_stores_nothing(tmp_path, home, tiny_chat_model):
    good = write_jsonl(tmp_path / "good.jsonl", labelled_rows())
    assert import_(good, tiny_chat_model).exit_code == 0
    before = sorted(p.name for p in (home / "datasets").iterdir())
    rows = labelled_rows()
    rows[5] = "{broken"
    result = runner.invoke(app, ["data", "import", str(write_jsonl(tmp_path / "bad.jsonl", rows)),
                                 "--model", str(tiny_chat_model)])
    assert result.exit_code == 1
    assert "line 6" in result.output and "nothing was stored" in result.output
    assert sorted(p.name for p in (home / "datasets").iterdir()) == before
