"""Every format round-trips: file -> internal records -> file gives the same examples."""

from __future__ import annotations

import json

import pytest

from tests.conftest import write_jsonl
from tuneloop.data.dataset import Source, load_records
from tuneloop.data.formats import ConversionError, detect_format, dump_record
from tuneloop.data.records import ChatRecord, LabelledRecord, PreferenceRecord
from tuneloop.data.writers import write_records

SAMPLES = {
    "chat": [
        {"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": f"Hi {i}"},
                      {"role": "assistant", "content": f"Hello {i}", "weight": 0},
                      {"role": "user", "content": "Again"}, {"role": "assistant", "content": f"Hello again {i}"}]}
        for i in range(10)
    ] + [{"messages": [{"role": "user", "content": "Weather?"},
                       {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function",
                        "function": {"name": "weather", "arguments": "{}"}}]},
                       {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
                       {"role": "assistant", "content": "Sunny."}],
          "tools": [{"type": "function", "function": {"name": "weather", "parameters": {}}}]}],
    "completion": [{"prompt": f"2+{i}=", "completion": f"{2 + i}"} for i in range(10)],
    "instruction": [{"instruction": f"Translate {i}", "input": "bonjour" if i % 2 else "", "output": f"hello {i}"}
                    for i in range(10)],
    "preference": [{"input": {"messages": [{"role": "user", "content": f"Say hi {i}"}]},
                    "preferred_output": [{"role": "assistant", "content": "Hi!"}],
                    "non_preferred_output": [{"role": "assistant", "content": f"Go away {i}"}]} for i in range(10)],
    "prompt_chosen": [{"prompt": f"Say hi {i}", "chosen": "Hi!", "rejected": f"No {i}"} for i in range(5)]
    + [{"prompt": [{"role": "user", "content": f"Say hi {i}"}], "chosen": [{"role": "assistant", "content": "Hi!"}],
        "rejected": [{"role": "assistant", "content": f"No {i}"}]} for i in range(5)],
    "labelled": [{"text": f"my card was charged twice {i}", "label": "billing"} for i in range(5)]
    + [{"text": f"late parcel and wrong charge {i}", "labels": ["shipping", "billing"]} for i in range(5)],
}


@pytest.mark.parametrize("fmt", list(SAMPLES))
def test_format_is_detected_from_content(fmt):
    assert {detect_format(obj) for obj in SAMPLES[fmt]} == {fmt}


@pytest.mark.parametrize("fmt", list(SAMPLES))
def test_jsonl_round_trip(tmp_path, fmt):
    src = write_jsonl(tmp_path / "in.jsonl", SAMPLES[fmt])
    detected, records = load_records(Source(src))
    assert detected == fmt
    out = tmp_path / "out.jsonl"
    write_records(records, out, fmt)
    assert [json.loads(line) for line in out.read_text().splitlines()] == SAMPLES[fmt]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".json"])
@pytest.mark.parametrize("fmt", list(SAMPLES))
def test_table_and_array_files_round_trip(tmp_path, fmt, suffix):
    """JSONL -> CSV/TSV/Parquet/JSON -> records gives the same records as the JSONL did."""
    _, records = load_records(Source(write_jsonl(tmp_path / "in.jsonl", SAMPLES[fmt])))
    table = tmp_path / f"data{suffix}"
    write_records(records, table, fmt)
    detected, again = load_records(Source(table))
    assert detected == fmt
    assert [r for _, r in again] == [r for _, r in records]
    assert [dump_record(r, fmt) for _, r in again] == SAMPLES[fmt]


def test_csv_with_column_mapping(tmp_path):
    path = tmp_path / "tickets.csv"
    path.write_text("body,category\n" + "".join(f"ticket {i},billing\n" for i in range(10)))
    from tuneloop.data.readers import parse_column_map

    fmt, records = load_records(Source(path, columns=parse_column_map("text=body,label=category")))
    assert fmt == "labelled"
    assert records[0] == (1, LabelledRecord(text="ticket 0", labels=["billing"]))


def test_csv_multi_label_cells_split_on_bar(tmp_path):
    path = tmp_path / "multi.csv"
    path.write_text("text,labels\n" + "".join(f"late and overcharged {i},shipping|billing\n" for i in range(10)))
    _, records = load_records(Source(path))
    assert records[0][1].labels == ["shipping", "billing"] and records[0][1].multi_label


def test_every_kind_converts_to_chat(tmp_path):
    for fmt, rows in SAMPLES.items():
        _, records = load_records(Source(write_jsonl(tmp_path / f"{fmt}.jsonl", rows)))
        out = tmp_path / f"{fmt}-chat.jsonl"
        write_records(records, out, "chat")
        _, chats = load_records(Source(out))
        assert all(isinstance(r, ChatRecord) for _, r in chats)
        assert chats[0][1].messages[-1].role == "assistant"


def test_alpaca_to_chat_joins_instruction_and_input():
    from tuneloop.data.records import InstructionRecord

    messages = InstructionRecord(instruction="Translate", input="bonjour", output="hello").to_messages()
    assert [m.content for m in messages] == ["Translate\n\nbonjour", "hello"]


def test_conversion_that_cannot_hold_the_record_names_the_line(tmp_path):
    _, records = load_records(Source(write_jsonl(tmp_path / "chat.jsonl", SAMPLES["chat"])))
    with pytest.raises(ConversionError, match="line 1.*5 messages.*completion"):
        write_records(records, tmp_path / "out.jsonl", "completion")
    with pytest.raises(ConversionError, match="no label"):
        dump_record(records[0][1], "labelled")


def test_preference_pair_is_kept_apart():
    _, record = 0, PreferenceRecord(messages=[{"role": "user", "content": "q"}],
                                    chosen=[{"role": "assistant", "content": "good"}],
                                    rejected=[{"role": "assistant", "content": "bad"}])
    assert dump_record(record, "preference")["non_preferred_output"] == [{"role": "assistant", "content": "bad"}]
    assert dump_record(record, "chat")["messages"][-1]["content"] == "good"


def test_rl_prompts_and_kto_answers_are_told_apart_from_chats_and_completions():
    from tuneloop.data.formats import detect_dataset_format, detect_format

    asked = {"messages": [{"role": "user", "content": "which team?"}], "team": "billing"}
    answered = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    follow_up = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                              {"role": "user", "content": "and?"}]}
    assert detect_format(asked) == "prompts" and detect_format(answered) == detect_format(follow_up) == "chat"
    assert detect_dataset_format([asked] * 3) == "prompts"
    assert detect_dataset_format([asked] * 7 + [answered] * 5) == "chat"  # a chat file with unanswered lines
    assert detect_format({"prompt": "p", "completion": "c", "label": True}) == "unpaired"
    assert detect_format({"prompt": "p", "completion": "c", "label": "positive"}) == "completion"
