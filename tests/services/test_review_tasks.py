"""The task type registry: a task type defined here is served by project creation, the queue's record view,
answer validation, the people's answer on a record, agreement and export with no other file changed; and the
review services ask the task type, never which task a project has."""

from __future__ import annotations

import ast
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_jsonl
from tuneloop.services import ServiceError
from tuneloop.services.review import export, projects, quality, queue, tasks
from tuneloop.services.review.tasks import Item, Shown, TaskType, Unfit
from tuneloop.store import review as store
from tuneloop.store.tables import Annotation, Project, Record, User

from tests.services.test_review import env  # noqa: F401  (the fixture: a database with four people)

REVIEW = Path(__file__).resolve().parents[2] / "src" / "tuneloop" / "services" / "review"


# ---------------------------------------------------------------------- a toy task type, registered here only
class Thumbs(TaskType):
    """Thumbs up or down on a text, with the question people answer shown next to it."""

    name = "thumbs"
    title = "say whether a text is polite"
    widget = "labels"
    exports = ("thumbs",)
    settles_by_agreement = False  # every thumb is kept (the export lists them all), as ratings are

    def read(self, item: Item) -> tuple[str, dict[str, Any]]:
        if "text" not in item:
            raise Unfit("a thumbs project needs a text to judge")
        return item["text"], {"question": item["original"].get("question", "Is this polite?")}

    def view(self, record: Record, prediction: dict[str, Any] | None, user: User | None) -> dict[str, Any]:
        return {"question": record.data["question"]}

    def normalise(self, value: dict[str, Any], shown: Shown) -> dict[str, Any]:
        thumb = value.get("thumb")
        if thumb not in ("up", "down"):
            raise ServiceError(400, f"value.thumb: '{thumb}' is not up or down (asked: {shown.view['question']})",
                               "value.thumb")
        return {"thumb": thumb, "label": thumb}

    def export_row(self, project: Project, record: Record, annotations: list[Annotation],
                   kind: str) -> dict[str, Any] | None:
        return {"text": record.text, "thumbs": [a.value["thumb"] for a in annotations]}


@pytest.fixture
def thumbs(monkeypatch):
    tasks.project_tasks()  # the built-in types first, so the toy is one among them
    monkeypatch.setitem(tasks._REGISTRY, "thumbs", Thumbs())
    return "thumbs"


def test_a_task_type_defined_in_a_test_is_served_by_the_queue(env, thumbs):  # noqa: F811
    session, ann, bob = env["session"], env["people"]["ann"], env["people"]["bob"]
    assert "thumbs" in tasks.project_tasks()
    rows = [{"text": "Thanks a lot!", "question": "Is this kind?"}, {"text": "Go away."}]
    project = projects.create_project(session, env["settings"], name="t", task=thumbs, overlap=2,
                                      data=str(write_jsonl(env["data"] / "t.jsonl", rows)))
    view = queue.next_record(session, project, ann, "id")
    assert (view["text"], view["question"]) == ("Thanks a lot!", "Is this kind?")
    with pytest.raises(ServiceError, match=r"value.thumb: 'sideways' is not up or down \(asked: Is this kind\?\)") as e:
        queue.submit(session, project, ann, view["id"], {"thumb": "sideways"})
    assert e.value.param == "value.thumb"
    annotation = queue.submit(session, project, ann, view["id"], {"thumb": "up"})
    assert annotation.value == {"thumb": "up", "label": "up"}
    assert queue.next_record(session, project, bob, "id")["id"] == view["id"]
    queue.submit(session, project, bob, view["id"], {"thumb": "down"})
    record = store.get_record(session, project_id=project.id, record_id=view["id"])
    assert (record.status, record.human_label, record.disagreement, record.answer_source) == (
        "annotated", "up", True, "people")
    assert quality.agreement(session, project)["kappa_pairs"][0]["records"] == 1
    assert export.export_rows(session, project, "thumbs") == [{"text": "Thanks a lot!", "thumbs": ["up", "down"]}]
    with pytest.raises(ServiceError, match="a thumbs project exports as thumbs, not 'sft'"):
        export.export_rows(session, project, "sft")


def test_a_record_that_does_not_fit_the_toy_type_names_its_line(env, thumbs):  # noqa: F811
    data = write_jsonl(env["data"] / "bad.jsonl", [{"text": "fine"}, {"prompt": "no text here"}])
    with pytest.raises(ServiceError, match=r"bad\.jsonl@[0-9a-f]{12} line 2: a thumbs project needs a text to judge"):
        projects.create_project(env["session"], env["settings"], name="bad", task=thumbs, data=str(data))


def test_a_new_task_type_reaches_the_api_its_schema_the_form_and_the_cli(env, thumbs, tmp_path):  # noqa: F811
    """Its name is accepted by the API (JSON and the upload form), listed in the OpenAPI document and the
    project form, and shown by `tuneloop review tasks`; an unknown task is a 400 that lists the registered ones."""
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from tuneloop.api.app import create_app
    from tuneloop.cli.main import app as cli
    from tuneloop.store import repo

    settings = env["settings"]
    app = create_app(settings)
    with app.state.sessions() as session:
        _, key = repo.create_key(session, name="t")
        session.commit()
    data = write_jsonl(tmp_path / "polite.jsonl", [{"text": "Thanks a lot!"}, {"text": "Go away."}])
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        document = client.get("/openapi.json").json()
        schema = document["components"]["schemas"]["ProjectCreate"]["properties"]["task"]
        assert "thumbs" in schema["enum"] and "classification" in schema["enum"]
        with data.open("rb") as f:
            made = client.post("/api/projects/upload", data={"name": "polite", "task": "thumbs"},
                               files={"file": ("polite.jsonl", f)})
        assert made.status_code == 200, made.text
        wrong = client.post("/api/projects", json={"name": "x", "data": "file-x", "task": "thumbz"})
        assert wrong.status_code == 400
        error = wrong.json()["error"]
        assert error["param"] == "task" and "'thumbz' is not one of" in error["message"]
        assert "thumbs" in error["message"] and "rating" in error["message"]
    from tuneloop.web.pages import templates

    form = templates.get_template("projects.html").render(
        request=None, user=type("U", (), {"role": "admin", "username": "a"})(), projects=[],
        tasks=tasks.task_titles(), csrf="", version="")
    assert '<option value="thumbs">thumbs: say whether a text is polite</option>' in form
    listed = CliRunner().invoke(cli, ["review", "tasks"], env={"TUNELOOP_HOME": str(settings.home), "COLUMNS": "200"})
    assert listed.exit_code == 0 and "say whether a text is polite" in listed.output


def test_every_task_type_names_a_widget_of_the_queue_page():
    """The queue page takes answers through the widgets its script defines and never asks which task it serves."""
    import re

    script = (REVIEW.parents[1] / "web" / "static" / "queue.js").read_text()
    widgets = set(re.findall(r"^  (\w+): \{$", script[script.index("const WIDGETS"):], re.M))
    assert widgets == {"labels", "edit", "compare", "scale", "spans"}
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("//"))
    assert "dataset.task" not in code and not re.search(r"\btask\b", code)
    for name in tasks.project_tasks():
        for multi in (False, True):
            task = tasks.for_task(name, multi)
            assert task.widget in widgets and task.title, name


def test_every_built_in_task_type_is_registered():
    assert tasks.project_tasks() == ["arena", "classification", "preference", "rating", "response", "spans"]
    assert tasks.for_task("classification", multi_label=True).name == "multi-label"
    assert tasks.for_task("rating", multi_label=True).name == "rating"  # no multi-label variant: the flag is moot
    for name in tasks.project_tasks():
        task = tasks.for_task(name)
        assert task.exports and (task.train_as is None or task.train_as in task.exports)


def branches_on_the_task(path: Path) -> list[str]:
    """Comparisons and conditions on a project's `task` or `multi_label`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        tests: list[ast.AST] = []
        if isinstance(node, ast.Compare):
            tests = [node.left, *node.comparators]
        elif isinstance(node, (ast.If, ast.IfExp, ast.While)):
            tests = [node.test]
        for test in tests:
            if any(isinstance(n, ast.Attribute) and n.attr in ("task", "multi_label") for n in ast.walk(test)):
                found.append(f"{path.name}:{node.lineno}")
    return found


@pytest.mark.parametrize("module", ["queue.py", "export.py", "prelabel.py", "quality.py", "loop.py", "rounds.py",
                                    "projects.py"])
def test_the_review_services_never_branch_on_a_task(module):
    assert branches_on_the_task(REVIEW / module) == []


def test_the_branch_check_catches_a_branch(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("def f(project):\n    if project.multi_label:\n        return 1\n    return project.task == 'rating'\n")
    assert branches_on_the_task(bad) == ["x.py:2", "x.py:4"]


def test_a_multi_label_answer_is_a_list_and_counts_as_a_set(env):  # noqa: F811
    session, ann, bob = env["session"], env["people"]["ann"], env["people"]["bob"]
    rows = [{"text": "t0"}, {"text": "t1"}]
    project = projects.create_project(session, env["settings"], name="m", task="classification", overlap=2,
                                      labels=["a", "b", "c"], multi_label=True,
                                      data=str(write_jsonl(env["data"] / "m.jsonl", rows)))
    for person, labels in ((ann, ["b", "a"]), (bob, ["a", "b", "a"])):
        view = queue.next_record(session, project, person, "id")
        annotation = queue.submit(session, project, person, view["id"], {"labels": labels})
        assert annotation.value == {"labels": ["a", "b"]}  # in the order of the project's labels, once each
    record = store.get_record(session, project_id=project.id, record_id=view["id"])
    assert (record.human_label, record.human_labels, record.disagreement) == (None, ["a", "b"], False)
    page = queue.table(session, project, store.TableQuery(label="b"))
    assert [r["human_labels"] for r in page["data"]] == [["a", "b"]]
    assert page["data"][0]["work"][0]["label"] == "a, b"
    assert queue.table(session, project, store.TableQuery(label="c"))["total"] == 0
    assert projects.summary(session, project)["label_distribution"] == {"a": 2, "b": 2}
    answers: set[Hashable] = {("a", "b")}
    assert tasks.task_of(project).agreement_labels(project, answers) == {"a": ("a",), "b": ("b",), "c": ("c",)}
