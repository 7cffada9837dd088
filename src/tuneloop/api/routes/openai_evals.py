"""/v1/evals: evals (an item schema and graders), their runs (jobs of kind `eval`) and the runs' output items, in
OpenAI's shapes."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query

from tuneloop.api.deps import SessionDep, SettingsDep
from tuneloop.services import evals as service
from tuneloop.store import evals as store

router = APIRouter(tags=["evals"])
Order = Literal["asc", "desc"]
Limit = Query(20, ge=1, le=100)


def _page(data: list[dict], more: bool) -> dict:
    return {"object": "list", "data": data, "has_more": more, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


@router.post("/evals")
def create_eval(body: service.EvalCreate, session: SessionDep, settings: SettingsDep) -> dict:
    """An eval: `data_source_config` (`custom`, with the JSON schema of its items) and `testing_criteria` (graders
    that score each answer: string_check, text_similarity, label_model, score_model, python). A bad grader or
    template is a 400 naming its field."""
    return service.eval_view(service.create_eval(session, settings, body))


@router.get("/evals")
def list_evals(session: SessionDep, after: str | None = None, limit: int = Limit, order: Order = "asc",
               order_by: Literal["created_at", "updated_at"] = "created_at") -> dict:
    rows, more = store.list_evals(session, after=after, limit=limit, newest_first=order == "desc")
    return _page([service.eval_view(r) for r in rows], more)


@router.get("/evals/{eval_id}")
def retrieve_eval(session: SessionDep, eval_id: str) -> dict:
    return service.eval_view(service.require_eval(session, eval_id))


@router.post("/evals/{eval_id}")
def update_eval(body: service.EvalUpdate, session: SessionDep, eval_id: str) -> dict:
    """Rename an eval or replace its metadata."""
    return service.eval_view(service.update_eval(session, eval_id, body))


@router.delete("/evals/{eval_id}")
def delete_eval(session: SessionDep, eval_id: str) -> dict:
    """The eval with its runs and their output items (a 409 while a run is queued or in progress)."""
    return service.delete_eval(session, eval_id)


@router.post("/evals/{eval_id}/runs")
def create_run(body: service.RunCreate, session: SessionDep, settings: SettingsDep, eval_id: str) -> dict:
    """A run: `data_source` `jsonl` (each item with its answer as `sample`) or `completions` (a model tuneloop
    serves answers `input_messages`, a template over the item or an item field). Items are checked against the
    eval's schema and graders at once; a worker then answers and grades them (a job of kind `eval`)."""
    return service.run_view(session, service.create_run(session, settings, eval_id, body))


@router.get("/evals/{eval_id}/runs")
def list_runs(session: SessionDep, eval_id: str, after: str | None = None, limit: int = Limit,
              order: Order = "asc",
              status: Literal["queued", "in_progress", "completed", "canceled", "failed"] | None = None) -> dict:
    service.require_eval(session, eval_id)
    if status is None:
        rows, more = store.list_runs(session, eval_id=eval_id, after=after, limit=limit, newest_first=order == "desc")
        return _page([service.run_view(session, r) for r in rows], more)
    views = [service.run_view(session, r) for r in store.runs_of(session, eval_id=eval_id)]
    views = sorted((v for v in views if v["status"] == status), key=lambda v: (v["created_at"], v["id"]),
                   reverse=order == "desc")
    if after:
        ids = [v["id"] for v in views]
        views = views[ids.index(after) + 1:] if after in ids else views
    return _page(views[:limit], len(views) > limit)


@router.get("/evals/{eval_id}/runs/{run_id}")
def retrieve_run(session: SessionDep, eval_id: str, run_id: str) -> dict:
    """The run with its status, `result_counts`, `per_testing_criteria_results` and `per_model_usage`, as far as
    it has got."""
    return service.run_view(session, service.require_run(session, eval_id, run_id))


@router.post("/evals/{eval_id}/runs/{run_id}/cancel")
def cancel_run(session: SessionDep, eval_id: str, run_id: str) -> dict:
    return service.run_view(session, service.cancel_run(session, eval_id, run_id))


@router.delete("/evals/{eval_id}/runs/{run_id}")
def delete_run(session: SessionDep, eval_id: str, run_id: str) -> dict:
    """The run and its output items (a 409 while it is queued or in progress)."""
    return service.delete_run(session, eval_id, run_id)


@router.get("/evals/{eval_id}/runs/{run_id}/output_items")
def list_output_items(session: SessionDep, eval_id: str, run_id: str, after: str | None = None,
                      limit: int = Limit, order: Order = "asc",
                      status: Literal["pass", "fail", "error"] | None = None) -> dict:
    """The graded items in data order: each item, the answer (`sample`) and every criterion's result."""
    service.require_run(session, eval_id, run_id)
    rows, more = store.list_items(session, run_id=run_id, status=status, after=after, limit=limit,
                                  newest_first=order == "desc")
    return _page([service.item_view(r, eval_id) for r in rows], more)


@router.get("/evals/{eval_id}/runs/{run_id}/output_items/{output_item_id}")
def retrieve_output_item(session: SessionDep, eval_id: str, run_id: str, output_item_id: str) -> dict:
    return service.item_view(service.require_item(session, eval_id, run_id, output_item_id), eval_id)
