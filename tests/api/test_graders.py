"""`/v1/fine_tuning/alpha/graders/run|validate` through the official openai SDK: OpenAI's shapes, scores that match
the libraries they come from, judges that answer through the shared generation module, Python graders only where the
server allows them (and then in a child process with limits), and a 400 naming the field for every bad grader."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import live_server

ANSWER = "{{ sample.output_text }}"


@pytest.fixture(scope="module")
def python_server(tmp_path_factory):
    yield from live_server(tmp_path_factory.mktemp("graders-home"), with_worker=False, allow_python_graders=True,
                           python_grader_seconds=3, python_grader_memory_mb=256)


@pytest.fixture
def python_client(python_server):
    return openai.OpenAI(base_url=python_server["url"], api_key=python_server["key"], max_retries=0)


def test_string_check_runs_in_openais_shape(client):
    grader = {"type": "string_check", "name": "team", "input": ANSWER, "reference": "{{ item.team }}",
              "operation": "ilike"}
    result = client.fine_tuning.alpha.graders.run(grader=grader, model_sample="Team: Billing.", item={"team": "billing"})
    assert result.reward == 1.0 and result.sub_rewards == {}
    assert result.metadata.name == "team" and result.metadata.type == "string_check"
    assert not any(v for k, v in result.metadata.errors.model_dump().items() if isinstance(v, bool))
    assert result.metadata.scores == {"team": 1.0}
    eq = client.fine_tuning.alpha.graders.run(grader={**grader, "operation": "eq"}, model_sample="Team: Billing.",
                                              item={"team": "billing"})
    assert eq.reward == 0.0
    checked = client.fine_tuning.alpha.graders.validate(grader=grader)
    assert checked.grader.type == "string_check" and checked.grader.operation == "ilike"


@pytest.mark.parametrize("metric", ["fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_2", "rouge_l"])
def test_text_similarity_matches_the_library_it_comes_from(client, metric):
    from nltk.translate.gleu_score import sentence_gleu
    from rapidfuzz import fuzz
    from rouge_score import rouge_scorer
    import sacrebleu

    answer, reference = "the parcel left our depot on monday", "your parcel left the depot on monday morning"
    expected = {
        "fuzzy_match": fuzz.ratio(answer, reference) / 100,
        "bleu": sacrebleu.sentence_bleu(answer, [reference]).score / 100,
        "gleu": sentence_gleu([reference.split()], answer.split()),
        "rouge_1": rouge_scorer.RougeScorer(["rouge1"]).score(reference, answer)["rouge1"].fmeasure,
        "rouge_2": rouge_scorer.RougeScorer(["rouge2"]).score(reference, answer)["rouge2"].fmeasure,
        "rouge_l": rouge_scorer.RougeScorer(["rougeL"]).score(reference, answer)["rougeL"].fmeasure,
    }[metric]
    result = client.fine_tuning.alpha.graders.run(
        grader={"type": "text_similarity", "name": "sim", "input": ANSWER, "reference": "{{ item.reference }}",
                "evaluation_metric": metric}, model_sample=answer, item={"reference": reference})
    assert 0 < expected < 1
    assert result.reward == pytest.approx(expected, abs=1e-9)


def test_rouge_counts_words_of_any_script(client):
    """rouge-score's own tokenizer keeps only a-z and 0-9: Greek text would score 0 against itself."""
    result = client.fine_tuning.alpha.graders.run(
        grader={"type": "text_similarity", "name": "sim", "input": ANSWER, "reference": "{{ item.reference }}",
                "evaluation_metric": "rouge_l"}, model_sample="το δέμα έφυγε", item={"reference": "το δέμα έφυγε χθες"})
    assert result.reward == pytest.approx(2 * 1 * 0.75 / 1.75)


@pytest.mark.real_model
def test_cosine_uses_the_embedded_encoder(client):
    grader = {"type": "text_similarity", "name": "cos", "input": ANSWER, "reference": "{{ item.reference }}",
              "evaluation_metric": "cosine"}
    near = client.fine_tuning.alpha.graders.run(grader=grader, model_sample="My parcel has not arrived yet",
                                                item={"reference": "Where is my package?"})
    far = client.fine_tuning.alpha.graders.run(grader=grader, model_sample="My parcel has not arrived yet",
                                               item={"reference": "How do I reset my password?"})
    same = client.fine_tuning.alpha.graders.run(grader=grader, model_sample="Where is my package?",
                                                item={"reference": "Where is my package?"})
    assert same.reward == pytest.approx(1.0, abs=1e-5) and near.reward > far.reward + 0.2


def test_multi_combines_named_graders_with_its_formula(client):
    grader = {"type": "multi", "name": "both", "calculate_output": "0.25 * exact + 0.75 * close^2", "graders": {
        "exact": {"type": "string_check", "name": "exact", "input": ANSWER, "reference": "{{ item.team }}",
                  "operation": "eq"},
        "close": {"type": "text_similarity", "name": "close", "input": ANSWER, "reference": "{{ item.team }}",
                  "evaluation_metric": "fuzzy_match"}}}
    result = client.fine_tuning.alpha.graders.run(grader=grader, model_sample="billin", item={"team": "billing"})
    close = result.sub_rewards["close"]
    assert result.sub_rewards["exact"] == 0.0 and 0.8 < close < 1
    assert result.reward == pytest.approx(0.75 * close ** 2)
    assert result.metadata.scores["both"] == result.reward


def test_a_judge_model_answers_through_the_server(client, tiny_chat_model):
    """The tiny model's answer is noise: what must hold is that it was asked (tokens counted against it) and that
    an unreadable answer is flagged, never a 500."""
    grader = {"type": "score_model", "name": "judge", "model": str(tiny_chat_model), "range": [1, 7],
              "input": [{"role": "user", "content": "Rate this answer to '{{ item.question }}': {{ sample.output_text }}"}],
              "sampling_params": {"max_completions_tokens": 6, "seed": 3}}
    result = client.fine_tuning.alpha.graders.run(grader=grader, model_sample="It ships today.",
                                                  item={"question": "when does it ship?"})
    assert 0 < result.model_grader_token_usage_per_model[str(tiny_chat_model)] <= 6
    if result.metadata.errors.model_grader_parse_error:
        assert result.reward == 0.0
    else:
        assert 1 <= result.reward <= 7
    labels = {"type": "label_model", "name": "judge", "model": str(tiny_chat_model), "labels": ["good", "bad"],
              "passing_labels": ["good"], "input": [{"role": "user", "content": "{{ sample.output_text }}"}]}
    labelled = client.fine_tuning.alpha.graders.run(grader=labels, model_sample="fine")
    assert labelled.reward in (0.0, 1.0) and str(tiny_chat_model) in labelled.model_grader_token_usage_per_model


@pytest.mark.parametrize("grader,param,words", [
    ({"type": "regex", "name": "x"}, "grader.type", "unknown grader type 'regex'"),
    ({"type": "string_check", "name": "x", "input": ANSWER, "reference": "a", "operation": "contains"},
     "grader.operation", "'eq', 'ne', 'like' or 'ilike'"),
    ({"type": "string_check", "name": "x", "input": "{{ answer }}", "reference": "a", "operation": "eq"},
     "grader.input", "the template names answer"),
    ({"type": "string_check", "name": "x", "input": "{{ item.a ", "reference": "a", "operation": "eq"},
     "grader.input", "does not parse"),
    ({"type": "text_similarity", "name": "x", "input": ANSWER, "reference": "a", "evaluation_metric": "rouge_9"},
     "grader.evaluation_metric", "rouge_5"),
    ({"type": "multi", "name": "m", "calculate_output": "a + b", "graders": {
        "a": {"type": "string_check", "name": "a", "input": ANSWER, "reference": "x", "operation": "eq"}}},
     "grader.calculate_output", "the formula names b"),
    ({"type": "multi", "name": "m", "calculate_output": "a", "graders": {
        "a": {"type": "string_check", "name": "a", "input": ANSWER, "reference": "x", "operation": "eqq"}}},
     "grader.graders.a.operation", "'eq', 'ne'"),
    ({"type": "label_model", "name": "l", "model": "smollm2-135m-instruct", "labels": ["a"], "passing_labels": ["b"],
      "input": [{"role": "user", "content": "hi"}]}, "grader.passing_labels", "['b'] are not among labels"),
    ({"type": "score_model", "name": "s", "model": "no-such-judge", "input": [{"role": "user", "content": "hi"}]},
     "grader.model", "no model 'no-such-judge' here to judge with"),
    ({"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1\n"}, "grader.type",
     "TUNELOOP_ALLOW_PYTHON_GRADERS=1"),
])
def test_a_bad_grader_is_a_400_naming_the_field(client, grader, param, words):
    for call in (lambda: client.fine_tuning.alpha.graders.validate(grader=grader),
                 lambda: client.fine_tuning.alpha.graders.run(grader=grader, model_sample="a", item={})):
        with pytest.raises(openai.BadRequestError) as bad:
            call()
        assert bad.value.body["param"] == param and words in bad.value.body["message"]


def test_an_item_without_a_templated_field_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as bad:
        client.fine_tuning.alpha.graders.run(grader={"type": "string_check", "name": "t", "input": ANSWER,
                                                     "reference": "{{ item.team }}", "operation": "eq"},
                                             model_sample="billing", item={"label": "billing"})
    assert bad.value.body["param"] == "item" and "lacks the field team" in bad.value.body["message"]


def test_python_graders_run_in_a_limited_child_where_allowed(python_client):
    source = "def grade(sample, item):\n    return float(sample['output_text'].strip() == item['team'])\n"
    grader = {"type": "python", "name": "py", "source": source}
    assert python_client.fine_tuning.alpha.graders.validate(grader=grader).grader.source == source
    assert python_client.fine_tuning.alpha.graders.run(grader=grader, model_sample=" billing",
                                                       item={"team": "billing"}).reward == 1.0
    failing = {**grader, "source": "def grade(sample, item):\n    return item['missing']\n"}
    result = python_client.fine_tuning.alpha.graders.run(grader=failing, model_sample="x", item={})
    assert result.reward == 0 and result.metadata.errors.python_grader_runtime_error
    assert "KeyError: 'missing'" in result.metadata.errors.python_grader_runtime_error_details
    spinning = {**grader, "source": "def grade(sample, item):\n    while True:\n        pass\n"}
    result = python_client.fine_tuning.alpha.graders.run(grader=spinning, model_sample="x", item={})
    assert result.reward == 0 and result.metadata.errors.unresponsive_reward_error
    hungry = {**grader, "source": "def grade(sample, item):\n    return len(bytearray(1 << 30))\n"}  # 1 GiB > 256 MiB
    result = python_client.fine_tuning.alpha.graders.run(grader=hungry, model_sample="x", item={})
    assert result.reward == 0 and "MemoryError" in result.metadata.errors.python_grader_runtime_error_details
    nosy = {**grader, "source": "import os\ndef grade(sample, item):\n    return float(len(os.listdir('.')))\n"}
    assert python_client.fine_tuning.alpha.graders.run(grader=nosy, model_sample="x", item={}).reward == 0  # empty cwd
