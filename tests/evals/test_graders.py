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


@pytest.mark.parametrize("template", ["{{ 1/0 }}", "{{ 'a' * 10**10 }}", "{{ 9**9**9 }}", "{% for i in range(9) %}x{% endfor %}",
                                      "{{ range(10) }}", "{% if item.x %}y{% endif %}"])
def test_templates_only_fill_in_fields(template):
    """Arithmetic, loops, conditions and calls are refused before anything compiles the template (compiling folds
    constants: '{{ 9**9**9 }}' would hang the server)."""
    with pytest.raises(graders.GraderError, match="templates fill in fields") as bad:
        graders.parse({"type": "string_check", "name": "s", "input": template, "reference": "x", "operation": "eq"},
                      allow_python=False)
    assert bad.value.param == "grader.input"


def test_a_completion_the_grader_cannot_read_scores_zero_and_a_line_without_its_field_is_not_scored():
    """In RL a broken answer must not escape its penalty: only data lines that lack the grader's fields go unscored."""
    import math

    from tuneloop.config.recipe import RewardSource
    from tuneloop.config.settings import Settings
    from tuneloop.evals.rl import grader_reward

    source = RewardSource(grader={"type": "string_check", "name": "json", "input": "{{ sample.output_json.answer }}",
                                  "reference": "{{ item.answer }}", "operation": "eq"})
    reward = grader_reward(source, Settings())
    values = reward([[]] * 4, ['{"answer": "42"}', '{"answer": "41"}', "not json", '{"answer": "42"}'],
                    [{"answer": "42"}] * 3 + [{}])
    assert values[:3] == [1.0, 0.0, 0.0] and math.isnan(values[3])


def test_python_graders_answer_in_shape_or_fail_whole():
    env = graders.GradingEnv(allow_python=True, python_seconds=5)
    for source in ("import json, os\ndef grade(s, i):\n    print(json.dumps({'results': []}), flush=True)\n    os._exit(0)\n",
                   "import os\ndef grade(s, i):\n    print('[1]', flush=True)\n    os._exit(0)\n"):
        grader = graders.parse({"type": "python", "name": "p", "source": source}, allow_python=True)
        results = graders.grade_batch(grader, ["a", "b"], [{}, {}], env)
        assert all(r.reward == 0 and r.errors["python_grader_server_error"] for r in results)
    nan = graders.parse({"type": "python", "name": "p", "source": "def grade(s, i):\n    return float('nan')\n"},
                        allow_python=True)
    assert graders.grade(nan, "a", {}, env).errors["python_grader_runtime_error"]


def test_a_python_grader_cannot_read_the_servers_environment():
    """A server holding a secret in its environment grades with a grader that looks for it in every /proc/*/environ.
    With namespaces (available here) the child has its own /proc and finds nothing; without them it finds the
    secret, which shows the check can fail."""
    import subprocess
    import sys

    from tuneloop.evals import sandbox

    if not sandbox.isolation():
        pytest.skip("no user namespaces here: the child shares /proc")
    server = (
        "import sys\n"
        "from tuneloop.evals import graders, sandbox\n"
        "if sys.argv[1] == 'plain':\n"
        "    sandbox.isolation = lambda: []\n"
        "source = ('import os\\ndef grade(s, i):\\n    found = []\\n    for pid in os.listdir(\"/proc\"):\\n'\n"
        "          '        try:\\n            found.append(open(f\"/proc/{pid}/environ\").read())\\n'\n"
        "          '        except Exception:\\n            pass\\n'\n"
        "          '    return float(any(\"hunter2\" in e for e in found))\\n')\n"
        "grader = graders.parse({'type': 'python', 'name': 'p', 'source': source}, allow_python=True)\n"
        "print(graders.grade(grader, 'a', {}, graders.GradingEnv(allow_python=True, python_seconds=5)).reward)\n")
    found = {}
    for mode in ("isolated", "plain"):
        done = subprocess.run([sys.executable, "-c", server, mode], capture_output=True, text=True, timeout=60,
                              env={**__import__("os").environ, "TUNELOOP_TEST_SECRET": "hunter2"})
        found[mode] = float(done.stdout.strip().splitlines()[-1])
    assert found == {"isolated": 0.0, "plain": 1.0}


def test_a_formula_that_overflows_scores_zero_with_its_reason():
    grader = graders.parse({"type": "multi", "name": "m", "calculate_output": "a * 1e308 * 10", "graders": {
        "a": {"type": "string_check", "name": "a", "input": "x", "reference": "x", "operation": "eq"}}},
        allow_python=False)
    result = graders.grade(grader, "x", {}, graders.GradingEnv())
    assert result.reward == 0 and "inf" in result.errors["other_error_details"]
    assert graders.sample_namespace("[" * 100_000)["output_json"] is None  # nesting deeper than json can read
