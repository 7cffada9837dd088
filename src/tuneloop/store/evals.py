"""Evaluations' rows: evals, their runs and the runs' output items. Keyword-only functions over a session; callers
commit."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from tuneloop.store.repo import new_id, page
from tuneloop.store.tables import Eval, EvalOutputItem, EvalRun


def add_eval(session: Session, *, name: str, metadata: dict[str, str] | None, data_source_config: dict[str, Any],
             testing_criteria: list[dict[str, Any]]) -> Eval:
    row = Eval(id=new_id("eval"), name=name, eval_metadata=metadata, data_source_config=data_source_config,
               testing_criteria=testing_criteria, created_at=time.time())
    session.add(row)
    return row


def get_eval(session: Session, *, eval_id: str) -> Eval | None:
    return session.get(Eval, eval_id)


def list_evals(session: Session, *, after: str | None, limit: int, newest_first: bool) -> tuple[list[Eval], bool]:
    return page(session, select(Eval), Eval, after, limit, newest_first)


def add_run(session: Session, *, eval_id: str, job_id: str, name: str, model: str | None,
            data_source: dict[str, Any], metadata: dict[str, str] | None) -> EvalRun:
    row = EvalRun(id=new_id("evalrun"), eval_id=eval_id, job_id=job_id, name=name, model=model,
                  data_source=data_source, run_metadata=metadata, created_at=time.time())
    session.add(row)
    return row


def get_run(session: Session, *, run_id: str) -> EvalRun | None:
    return session.get(EvalRun, run_id)


def runs_of(session: Session, *, eval_id: str) -> list[EvalRun]:
    return list(session.scalars(select(EvalRun).where(EvalRun.eval_id == eval_id)))


def list_runs(session: Session, *, eval_id: str, after: str | None, limit: int, newest_first: bool
              ) -> tuple[list[EvalRun], bool]:
    return page(session, select(EvalRun).where(EvalRun.eval_id == eval_id), EvalRun, after, limit, newest_first)


def add_items(session: Session, *, run_id: str, items: list[dict[str, Any]]) -> None:
    """Output items: dicts with datasource_item_id, status, datasource_item, results and sample."""
    at = time.time()
    session.add_all(EvalOutputItem(id=new_id("outputitem"), run_id=run_id, created_at=at, **item) for item in items)


def items_written(session: Session, *, run_id: str) -> int:
    """How many of the run's items are written (a restarted job continues after them: they are written in order)."""
    return int(session.scalar(select(func.count()).select_from(EvalOutputItem)
                              .where(EvalOutputItem.run_id == run_id)) or 0)


def get_item(session: Session, *, run_id: str, item_id: str) -> EvalOutputItem | None:
    row = session.get(EvalOutputItem, item_id)
    return row if row is not None and row.run_id == run_id else None


def list_items(session: Session, *, run_id: str, status: str | None, after: str | None, limit: int,
               newest_first: bool) -> tuple[list[EvalOutputItem], bool]:
    """A page of a run's items in data order (`datasource_item_id`), starting after the item `after`."""
    query = select(EvalOutputItem).where(EvalOutputItem.run_id == run_id)
    if status is not None:
        query = query.where(EvalOutputItem.status == status)
    order = EvalOutputItem.datasource_item_id
    if after:
        anchor = session.get(EvalOutputItem, after)
        if anchor is not None and anchor.run_id == run_id:
            query = query.where(order < anchor.datasource_item_id if newest_first else
                                order > anchor.datasource_item_id)
    rows = list(session.scalars(query.order_by(order.desc() if newest_first else order).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def delete_run(session: Session, *, run: EvalRun) -> None:
    session.execute(delete(EvalOutputItem).where(EvalOutputItem.run_id == run.id))
    session.delete(run)


def delete_eval(session: Session, *, row: Eval) -> None:
    for run in runs_of(session, eval_id=row.id):
        delete_run(session, run=run)
    session.flush()  # the runs go before the eval they refer to
    session.delete(row)
