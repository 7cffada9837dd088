"""One test per bad input: the report names the problem and the line it is on."""

from __future__ import annotations

import json

import pytest

from tests.conftest import chat_rows, labelled_rows, write_jsonl
from tuneloop.data.dataset import Source
from tuneloop.data.validate import validate


def check(path, **kwargs):
    tokenizer = kwargs.pop("tokenizer", None)
    max_length = kwargs.pop("max_length", None)
    return validate(Source(path, **kwargs), tokenizer=tokenizer, max_length=max_length)


def only(report, code):
    assert report.counts[code] >= 1, f"expected a '{code}' problem, got {dict(report.counts)}"
    return report.problems[code]


def test_clean_file_passes(tmp_path):
    report = check(write_jsonl(tmp_path / "ok.jsonl", chat_rows()))
    assert report.ok and report.errors == 0 and report.warnings == 0 and report.examples == 12


def test_invalid_json_names_the_line_and_column(tmp_path):
    rows = chat_rows()
    rows[3] = '{"messages": [ {"role": "user", "content": "hi"}'
    (problem,) = only(check(write_jsonl(tmp_path / "bad.jsonl", rows)), "invalid_json")
    assert problem.line == 4 and "line 4" in str(problem) and "not valid JSON" in problem.message
    assert "column" in problem.message


def test_not_an_object(tmp_path):
    rows = chat_rows()
    rows[5] = "[1, 2, 3]"
    (problem,) = only(check(write_jsonl(tmp_path / "bad.jsonl", rows)), "not_object")
    assert problem.line == 6 and "got a list" in problem.message


def test_missing_field(tmp_path):
    rows = chat_rows()
    rows[2] = {"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}
    (problem,) = only(check(write_jsonl(tmp_path / "bad.jsonl", rows)), "missing_field")
    assert problem.line == 3 and problem.field == "messages[0].content" and "missing field" in problem.message


def test_wrong_type(tmp_path):
    rows = chat_rows()
    rows[1]["messages"][1]["content"] = 42
    (problem,) = only(check(write_jsonl(tmp_path / "bad.jsonl", rows)), "wrong_type")
    assert problem.line == 2 and "must be a string, got a number" in problem.message


def test_bad_weight_value(tmp_path):
    rows = chat_rows()
    rows[0]["messages"][2]["weight"] = 0.5
    (problem,) = only(check(write_jsonl(tmp_path / "bad.jsonl", rows)), "wrong_type")
    assert problem.line == 1 and "weight must be 0 or 1" in problem.message


def test_unknown_key_is_a_warning(tmp_path):
    rows = chat_rows()
    rows[7]["source"] = "crm"
    report = check(write_jsonl(tmp_path / "warn.jsonl", rows))
    (problem,) = only(report, "unknown_key")
    assert report.ok and problem.severity == "warning" and problem.line == 8 and "'source'" in problem.message


def test_unknown_role(tmp_path):
    rows = chat_rows()
    rows[4]["messages"][1]["role"] = "human"
    (problem,) = only(check(write_jsonl(tmp_path / "bad.jsonl", rows)), "unknown_role")
    assert problem.line == 5 and "'human'" in problem.message and "assistant" in problem.message


def test_empty_content(tmp_path):
    rows = chat_rows()
    rows[9]["messages"][2]["content"] = "   "
    (problem,) = only(check(write_jsonl(tmp_path / "bad.jsonl", rows)), "empty_content")
    assert problem.line == 10 and "empty" in problem.message


def test_no_assistant_message(tmp_path):
    rows = chat_rows()
    rows[0] = {"messages": [{"role": "user", "content": "hello?"}]}
    (problem,) = only(check(write_jsonl(tmp_path / "bad.jsonl", rows)), "no_assistant")
    assert problem.line == 1 and "no assistant message" in problem.message


def test_all_assistant_weights_zero_leaves_nothing_to_learn(tmp_path):
    rows = chat_rows()
    rows[11]["messages"][2]["weight"] = 0
    (problem,) = only(check(write_jsonl(tmp_path / "bad.jsonl", rows)), "no_assistant")
    assert problem.line == 12 and "weight 0" in problem.message


@pytest.mark.parametrize("style", ["openai", "trl"])
def test_identical_preference_pair(tmp_path, style):
    def row(i, same=False):
        if style == "openai":
            return {"input": {"messages": [{"role": "user", "content": f"q{i}"}]},
                    "preferred_output": [{"role": "assistant", "content": "same" if same else "good"}],
                    "non_preferred_output": [{"role": "assistant", "content": "same" if same else "bad"}]}
        return {"prompt": f"q{i}", "chosen": "same" if same else "good", "rejected": "same" if same else "bad"}

    rows = [row(i, same=(i == 6)) for i in range(12)]
    (problem,) = only(check(write_jsonl(tmp_path / "pref.jsonl", rows)), "identical_preference")
    assert problem.line == 7 and "same answer" in problem.message


def test_label_not_in_label_set(tmp_path):
    rows = labelled_rows()
    rows[2]["label"] = "biling"
    report = check(write_jsonl(tmp_path / "lab.jsonl", rows), label_set={"billing", "shipping", "technical"})
    (problem,) = only(report, "unknown_label")
    assert problem.line == 3 and "'biling'" in problem.message and "billing, shipping, technical" in problem.message


def test_too_long_uses_the_real_tokenizer_and_says_by_how_much(tmp_path, tiny_tokenizer):
    def tokens(row):
        text = tiny_tokenizer.apply_chat_template(
            [{"role": "user", "content": row["text"]}, {"role": "assistant", "content": row["label"]}], tokenize=False)
        return len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])

    rows = labelled_rows()
    limit = max(map(tokens, rows))
    rows[4]["text"] = "the customer asked where the order is " * 20
    report = check(write_jsonl(tmp_path / "long.jsonl", rows), tokenizer=tiny_tokenizer, max_length=limit)
    (problem,) = only(report, "too_long")
    expected = tokens(rows[4])
    assert report.ok and problem.line == 5
    assert problem.message.startswith(f"{expected} tokens, {expected - limit} over --max-length {limit}")
    assert report.longest == expected


def test_fewer_than_ten_examples(tmp_path):
    report = check(write_jsonl(tmp_path / "few.jsonl", chat_rows(4)))
    (problem,) = only(report, "too_few_examples")
    assert not report.ok and "only 4 valid example(s)" in problem.message


def test_invalid_utf8_in_jsonl(tmp_path):
    path = tmp_path / "latin1.jsonl"
    lines = [json.dumps(r).encode() for r in chat_rows()]
    lines[2] = '{"messages": [{"role": "user", "content": "caf\u00e9"}, {"role": "assistant", "content": "ok"}]}'.encode("latin-1")
    path.write_bytes(b"\n".join(lines) + b"\n")
    (problem,) = only(check(path), "invalid_utf8")
    assert problem.line == 3 and "0xe9" in problem.message and "UTF-8" in problem.message


def test_invalid_utf8_in_csv_names_the_row_and_column(tmp_path):
    path = tmp_path / "bad.csv"
    body = b"text,label\n" + b"".join(f"ticket {i},billing\n".encode() for i in range(11))
    body += "caf\u00e9 order,billing\n".encode("latin-1")
    path.write_bytes(body)
    (problem,) = only(check(path), "invalid_utf8")
    assert problem.line == 12 and "row 12" in str(problem) and "'text'" in problem.message


def test_binary_file(tmp_path):
    path = tmp_path / "model.jsonl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    report = check(path)
    (problem,) = only(report, "binary_file")
    assert not report.ok and "binary file" in problem.message and report.examples == 0
    assert set(report.counts) == {"binary_file"}  # one clear message, not a cascade


def test_duplicates_are_warnings_naming_the_first(tmp_path):
    rows = labelled_rows()
    rows[8] = dict(rows[1])
    rows[9] = {"text": rows[1]["text"], "label": "technical"}
    report = check(write_jsonl(tmp_path / "dup.jsonl", rows))
    problems = only(report, "duplicate")
    assert report.ok and [p.line for p in problems] == [9, 10]
    assert "duplicates line 2" in problems[0].message
    assert "labels differ" in problems[1].message


def test_unrecognised_format_says_what_was_expected(tmp_path):
    rows = [{"question": f"q{i}", "answer": "a"} for i in range(12)]
    report = check(write_jsonl(tmp_path / "qa.jsonl", rows))
    (problem,) = only(report, "unknown_format")
    assert "['answer', 'question']" in problem.message and "--format" in problem.message and not report.ok


def test_forced_format_reports_missing_fields_per_line(tmp_path):
    report = check(write_jsonl(tmp_path / "lab.jsonl", labelled_rows()), format="chat")
    assert report.counts["missing_field"] == 12 and report.problems["missing_field"][0].line == 1


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    report = check(path)
    assert not report.ok and report.counts["empty_file"] == 1


def test_errors_of_many_kinds_are_grouped_with_counts(tmp_path):
    rows = chat_rows(20)
    rows[0] = "not json"
    rows[1] = "not json either"
    rows[2]["messages"][1]["role"] = "bot"
    rows[3]["extra"] = 1
    report = check(write_jsonl(tmp_path / "mixed.jsonl", rows))
    data = report.to_dict()
    kinds = {k["code"]: k for k in data["kinds"]}
    assert kinds["invalid_json"]["count"] == 2 and [p["line"] for p in kinds["invalid_json"]["problems"]] == [1, 2]
    assert kinds["unknown_role"]["count"] == 1 and kinds["unknown_key"]["severity"] == "warning"
    assert data["errors"] == 3 and data["warnings"] == 1 and data["examples"] == 17
    assert [k["severity"] for k in data["kinds"]] == sorted(k["severity"] for k in data["kinds"])  # errors first


# ---------------------------------------------------------------- span data (named entities)
def span_rows(n: int = 12) -> list[dict]:
    return [{"text": f"order VC-{10000 + i} arrived on 3 May", "spans": [
        {"start": 6, "end": 14, "label": "ORDER"}, {"start": 26, "end": 31, "label": "DATE"}]} for i in range(n)]


def test_clean_span_file_passes(tmp_path):
    report = check(write_jsonl(tmp_path / "spans.jsonl", span_rows()), label_set={"ORDER", "DATE"})
    assert report.format == "spans" and report.ok and report.warnings == 0 and report.examples == 12


def test_a_span_outside_its_text_names_the_line_and_span(tmp_path):
    rows = span_rows()
    rows[4]["spans"][1] = {"start": 26, "end": 40, "label": "DATE"}
    rows[6]["spans"][0] = {"start": 9, "end": 9, "label": "ORDER"}
    problems = only(check(write_jsonl(tmp_path / "bad.jsonl", rows)), "bad_span")
    assert [(p.line, p.field) for p in problems] == [(5, "spans[1]"), (7, "spans[0]")]
    assert "runs from 26 to 40, outside the text (0 to 31 characters)" in problems[0].message
    assert "empty or reversed: start 9, end 9" in problems[1].message


def test_overlapping_spans_are_an_error(tmp_path):
    rows = span_rows()
    rows[2]["spans"].append({"start": 10, "end": 20, "label": "DATE"})
    (problem,) = only(check(write_jsonl(tmp_path / "bad.jsonl", rows)), "overlapping_spans")
    assert problem.line == 3 and "spans[0] (6-14) and spans[2] (10-20) overlap" in problem.message


def test_an_unknown_span_label_is_named(tmp_path):
    rows = span_rows()
    rows[8]["spans"][0]["label"] = "PRODUCT"
    (problem,) = only(check(write_jsonl(tmp_path / "bad.jsonl", rows), label_set={"ORDER", "DATE"}), "unknown_label")
    assert problem.line == 9 and problem.field == "spans[0].label" and "'PRODUCT' is not in the label set" in problem.message


def test_span_fields_of_the_wrong_type_are_named(tmp_path):
    rows = span_rows()
    rows[0]["spans"][0]["start"] = "6"
    rows[1]["spans"] = {"start": 1}
    rows[2]["spans"][0] = ["6", "14"]
    report = check(write_jsonl(tmp_path / "bad.jsonl", rows))
    assert [(p.line, p.field) for p in only(report, "wrong_type")] == [(1, "spans[0].start"), (2, "spans"),
                                                                       (3, "spans[0]")]
    assert report.examples == 9


def test_a_span_with_whitespace_at_an_edge_is_a_warning(tmp_path):
    rows = span_rows()
    rows[3]["spans"][0] = {"start": 5, "end": 14, "label": "ORDER"}
    report = check(write_jsonl(tmp_path / "warn.jsonl", rows))
    (problem,) = only(report, "span_whitespace")
    assert report.ok and problem.line == 4 and "' VC-10003'" in problem.message
