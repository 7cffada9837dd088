"""Prompt baselines: parsing, and which examples each test row gets."""

import pytest
import torch

from tuneloop.config.prompts import PromptConfig, is_prompt_candidate, parse_prompt_candidate
from tuneloop.config.recipe import RecipeError
from tuneloop.data.records import ChatRecord, LabelledRecord, Message
from tuneloop.evals.prompting import Shot, choose_shots, shot_pool, with_shots

POOL = [Shot(f"text {i}", f"label {i % 2}") for i in range(10)]


def test_candidates_parse_from_words_and_yaml(tmp_path):
    assert parse_prompt_candidate("zero-shot") == PromptConfig(k=0)
    assert parse_prompt_candidate("5-shot").label == "5-shot"
    assert is_prompt_candidate("x.yaml") and not is_prompt_candidate("runs/tickets")
    with pytest.raises(RecipeError, match="99-shot: at most 64 examples"):
        parse_prompt_candidate("99-shot")
    path = tmp_path / "route.yaml"
    path.write_text("model: m\nsystem: Route it.\nk: 2\nselection: nearest\n")
    config = parse_prompt_candidate(str(path))
    assert (config.model, config.system, config.k, config.selection, config.label) == ("m", "Route it.", 2, "nearest",
                                                                                       "route")
    path.write_text("k: -1\n")
    with pytest.raises(RecipeError, match=r"route.yaml: k: Input should be greater than or equal to 0"):
        parse_prompt_candidate(str(path))
    path.write_text("selection: closest\n")
    with pytest.raises(RecipeError, match=r"route.yaml: selection: Input should be 'random' or 'nearest'"):
        parse_prompt_candidate(str(path))
    path.write_text("- k\n")
    with pytest.raises(RecipeError, match="a prompt config is a mapping"):
        parse_prompt_candidate(str(path))
    with pytest.raises(RecipeError, match="missing.yaml: no such prompt config file"):
        parse_prompt_candidate(str(tmp_path / "missing.yaml"))


def test_random_shots_are_seeded_and_the_same_for_every_row():
    config = PromptConfig(k=3, seed=1)
    first = choose_shots(config, POOL, ["a", "b"])
    assert first[0] == first[1] and len(first[0]) == 3
    assert choose_shots(config, POOL, ["a"]) == first[:1]
    assert choose_shots(PromptConfig(k=3, seed=2), POOL, ["a"]) != first[:1]
    with pytest.raises(ValueError, match="11-shot: needs 11 training examples, the training data has 10"):
        choose_shots(PromptConfig(k=11), POOL, ["a"])


def test_a_test_text_found_in_the_pool_never_gets_itself():
    config = PromptConfig(k=3, seed=4)
    others = choose_shots(config, POOL, ["unseen"])[0]
    for shots, text in zip(choose_shots(config, POOL, [s.user for s in POOL]), [s.user for s in POOL]):
        assert len(shots) == 3 and text not in [s.user for s in shots]
        assert shots == others or len(set(shots) & set(others)) == 2   # the same k, one swapped for the next
    with pytest.raises(ValueError, match="besides the test text"):
        choose_shots(PromptConfig(k=10), POOL, ["text 1"])


def test_nearest_shots_follow_the_embedding_and_never_show_the_row_itself():
    def embed(texts):  # a point on a line per text: "text 7" sits at 7
        values = torch.tensor([float(t.split()[-1]) for t in texts])
        return torch.nn.functional.normalize(torch.stack([torch.ones_like(values), values / 10], 1), dim=-1)

    shots = choose_shots(PromptConfig(k=2, selection="nearest"), POOL, ["text 7", "text 0"], embed)
    assert [s.user for s in shots[0]] == ["text 6", "text 8"] or [s.user for s in shots[0]] == ["text 8", "text 6"]
    assert "text 7" not in [s.user for s in shots[0]]
    assert shots[1][-1].user == "text 1", "the nearest sits last, just before the question"


def test_shots_go_after_the_system_message():
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    got = with_shots(messages, [Shot("q1", "a1")])
    assert [m["role"] for m in got] == ["system", "user", "assistant", "user"]
    assert got[1:3] == [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}]
    assert with_shots(messages[1:], [], system="T")[0] == {"role": "system", "content": "T"}


def test_the_pool_reads_labelled_texts_and_conversations():
    records = [LabelledRecord(text="t", labels=["billing"]),
               ChatRecord(messages=[Message(role="system", content="s"), Message(role="user", content="u"),
                                    Message(role="assistant", content=" shipping ")]),
               ChatRecord(messages=[Message(role="user", content="no answer")])]
    assert shot_pool(records) == [Shot("t", "billing"), Shot("u", "shipping")]
