"""The grader module without a server: reading a judge's answer, templates, the fields a grader needs per data
line, and formulas."""

from __future__ import annotations

import pytest

from tuneloop.evals import graders


@pytest.mark.parametrize("text,expected", [('{"result": 4, "steps": []}', 4.0), ("Score: 3.5/7", 3.5), ("9", 7.0),
                                           ("-2", 1.0), ("no idea", None), ("nan", None)])
def test_a_judges_score_is_read_and_kept_in_range(text, expected):
    assert graders.read_score(text, 1, 7) == expected


@pytest.mark.parametrize("text,expected", [("Billing.", "billing"), ('"refund"', "refund"),
                                           ("I think this is shipping, not billing", "shipping"),
                                           ("billingual", None), ("unsure", None)])
def test_a_judges_label_is_the_whole_answer_or_the_first_label_named(text, expected):
    assert graders.read_label(text, ["billing", "shipping", "refund"]) == expected


def test_templates_write_non_text_as_json_and_name_what_a_line_lacks():
    sample = graders.sample_namespace('{"team": "billing", "n": 2}')
    assert graders.render("{{ sample.output_json.team }} {{ item.tags }}", sample, {"tags": ["a", "é"]}) == \
        'billing ["a", "é"]'
    with pytest.raises(graders.GraderError, match="names a field the data lacks"):
        graders.render("{{ item.team }}", sample, {})
    grader = graders.parse({"type": "multi", "name": "m", "calculate_output": "a * b", "graders": {
        "a": {"type": "string_check", "name": "a", "input": "{{ sample.output_text }}", "reference": "{{ item.team }}",
              "operation": "eq"},
        "b": {"type": "label_model", "name": "b", "model": "judge", "labels": ["y", "n"], "passing_labels": ["y"],
              "input": [{"role": "user", "content": "{{ item['question'] }}: {{ sample.output_text }}"}]}}},
        allow_python=False)
    assert graders.item_fields(grader) == {"team", "question"}
    assert graders.check_item(grader, {"team": "x"}) == "lacks the field question that the grader's templates name"
    assert graders.check_item(grader, {"team": "x", "question": "q"}) is None


def test_formulas_use_powers_and_functions_and_a_failure_scores_zero():
    assert graders.formula_value("2 * a^2 + max(a, b)", {"a": 0.5, "b": 0.25}) == pytest.approx(1.0)
    assert graders.formula_value("sqrt(a) + floor(b)", {"a": 0.25, "b": 1.5}) == pytest.approx(1.5)
    grader = graders.parse({"type": "multi", "name": "m", "calculate_output": "a / b", "graders": {
        "a": {"type": "string_check", "name": "a", "input": "x", "reference": "x", "operation": "eq"},
        "b": {"type": "string_check", "name": "b", "input": "x", "reference": "y", "operation": "eq"}}},
        allow_python=False)
    [result] = graders.grade_batch(grader, ["x"], [{}], graders.GradingEnv())
    assert result.reward == 0.0 and result.errors["other_error"] and "ZeroDivision" in result.errors["other_error_details"]


def test_a_judge_that_fails_scores_zero_with_its_reason():
    def down(model, messages, sampling):
        raise ConnectionError("refused")

    grader = graders.parse({"type": "score_model", "name": "s", "model": "judge",
                            "input": [{"role": "user", "content": "{{ sample.output_text }}"}]}, allow_python=False)
    result = graders.grade(grader, "an answer", {}, graders.GradingEnv(judge=down))
    assert result.reward == 0 and result.errors["model_grader_server_error_details"] == "ConnectionError: refused"
    seen = []
    answer = graders.grade(grader, "an answer", {}, graders.GradingEnv(
        judge=lambda model, messages, sampling: seen.append(messages) or ("0.8", 2)))
    assert answer.reward == 0.8 and answer.token_usage == {"judge": 2}
    assert seen[0][0] == {"role": "user", "content": "an answer"} and "one number from 0 to 1" in seen[0][-1]["content"]
