"""schemathesis over the server's own OpenAPI document, against a live server: every operation, every check
(server errors, status codes and schemas that disagree with the document, unsupported methods, schema-valid
requests refused, invalid ones accepted), a fixed seed and a bounded number of examples. A longer run:
`.venv/bin/python scripts/fuzz_api.py --max-examples 200`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fuzz_api.py"


def load_fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_api", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fuzz


def test_fuzzing_finds_no_server_error_and_no_disagreement_with_the_document(tmp_path):
    result = load_fuzz()(max_examples=20, seed=0, phases="examples,coverage,fuzzing", workers=1,
                         report_dir=tmp_path / "fuzz")
    summary = {k: v for k, v in result.items() if k != "output"}
    assert result["requests"] > 1000, summary  # the run reached every operation, not a few
    assert result["server_errors"] == 0, result["output"][-6000:]
    assert result["exit_code"] == 0, result["output"][-6000:]
    assert "44 selected / 44 total" in result["operations"] or result["operations"].split()[1] == \
        result["operations"].split()[-2], summary
