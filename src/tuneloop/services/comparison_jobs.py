"""Comparisons as jobs: `POST /api/comparisons` (and the Compare page) queue a job of kind `compare` that any worker
runs (`services/comparisons.run_comparison`, the same as `tuneloop compare`), writing the comparison folder
`<home>/comparisons/<id>/`. Reading them back: the list, one comparison, the items behind a metric's difference
(side by side), the plot."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneloop.config.prompts import SHOT
from tuneloop.config.settings import Settings
from tuneloop.evals import compare as scoring
from tuneloop.services import ServiceError
from tuneloop.services.files import require_file
from tuneloop.services.models import api_model_ref
from tuneloop.store import repo
from tuneloop.store.blobs import content_path
from tuneloop.store.tables import Job
from tuneloop.worker.kinds import job_session, register

ID = re.compile(r"^cmp-[A-Za-z0-9_-]{1,80}$")
FINAL = {"succeeded", "failed", "cancelled"}


class ComparisonCreate(BaseModel):
    """POST /api/comparisons: what `tuneloop compare` takes."""

    model_config = ConfigDict(extra="forbid", strict=True)  # 2 is not "2"
    candidates: list[str] = Field(min_length=1, max_length=8, description="Models tuneloop serves (a base, a "
                                  "fine-tuned model, a checkpoint, a run) or prompt baselines (zero-shot, 5-shot); the "
                                  "first is the one the others are tested against")
    data: str = Field(min_length=1, description="Test data: an uploaded file id, a dataset version, or a file under "
                                                "TUNELOOP_ALLOWED_PATHS")
    task: Literal["auto", "classification", "sft"] = "auto"
    train: str | None = Field(None, min_length=1, description="Where k-shot baselines take their examples")
    base: str | None = Field(None, min_length=1, description="The model prompt baselines prompt")
    max_generate: int = Field(50, ge=1, le=1000)
    max_new_tokens: int = Field(128, ge=1, le=1024)
    max_length: int = Field(1024, ge=16, le=8192)
    resamples: int = Field(2000, ge=100, le=10000)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    latency_samples: int = Field(10, ge=0, le=100)


def client_data(session: Session, settings: Settings, ref: str, param: str) -> str:
    """What the job reads for a client's data: an uploaded file's stored path, a dataset version, an allowed path."""
    from tuneloop.data.versions import resolve_version

    if ref.startswith("file-"):
        return str(content_path(settings, require_file(session, ref, param)))
    if ref not in {"", ".", ".."} and Path(ref).name == ref:
        try:
            resolve_version(settings.datasets_dir, ref)
            return ref
        except Exception:  # noqa: BLE001 - not a version: an allowed path, or nothing
            pass
    if settings.allows(ref):
        return ref
    raise ServiceError(404, f"{param}: no uploaded file, dataset version or allowed file '{ref}'", param,
                       "data_not_found")


def client_candidate(session: Session, settings: Settings, text: str, param: str) -> str:
    if SHOT.match(text):
        return text
    if text.endswith((".yaml", ".yml")):
        if not settings.allows(text):
            raise ServiceError(404, f"{param}: no prompt config '{text}' under TUNELOOP_ALLOWED_PATHS", param,
                               "prompt_not_found")
        return text
    try:
        return api_model_ref(session, settings, text)
    except ServiceError as e:
        raise ServiceError(e.status, f"{param}: {e.message}", param, e.code) from None


def start_comparison(session: Session, settings: Settings, body: ComparisonCreate) -> Job:
    """Check what the client names (only its own data and the models the server serves), then queue the job."""
    candidates = [client_candidate(session, settings, c, f"candidates[{i}]") for i, c in enumerate(body.candidates)]
    params = {**body.model_dump(), "candidates": candidates, "names": body.candidates,
              "data": client_data(session, settings, body.data, "data"),
              "train": client_data(session, settings, body.train, "train") if body.train else None,
              "base": client_candidate(session, settings, body.base, "base") if body.base else None}
    job_id = repo.new_id("job")
    params["output"] = f"cmp-{job_id.removeprefix('job-')[:16]}"
    job = Job(id=job_id, kind="compare", model=body.candidates[0], params=params, method={}, hyperparameters={},
              extra={}, status="queued", result_files=[], created_at=time.time(), cancel_requested=False,
              progress={"done": 0, "total": None, "unit": "items"})
    session.add(job)
    repo.add_event(session, job_id=job.id, message=f"Comparison {params['output']} of {len(candidates)} candidates "
                   "queued")
    session.commit()
    return job


@register("compare")
def run_compare_job(job_id: str, settings: Settings) -> None:
    from tuneloop.services.comparisons import run_comparison

    with job_session(job_id, settings) as (session, job):
        p = job.params
        last = [0.0]

        def on_stage(description: str, total: int):
            job.progress = {"done": 0, "total": total, "unit": description}
            session.commit()

            def advance(n: int) -> None:
                progress = dict(job.progress or {})
                progress["done"] = progress.get("done", 0) + n
                job.progress = progress
                if time.time() - last[0] > 1.0 or progress["done"] >= (progress.get("total") or 0):
                    last[0] = time.time()
                    session.commit()

            return advance

        result = run_comparison(settings, p["candidates"], p["data"], task=p["task"], train=p["train"],
                                base=p["base"], max_generate=p["max_generate"], max_new_tokens=p["max_new_tokens"],
                                max_length=p["max_length"], resamples=p["resamples"], seed=p["seed"],
                                latency_samples=p["latency_samples"],
                                output=settings.home / "comparisons" / p["output"], on_stage=on_stage)
        job.result = {"comparison": result["id"]}
        session.commit()


# ---------------------------------------------------------------------- reading comparisons
def _folder(settings: Settings, comparison_id: str) -> Path:
    if not ID.match(comparison_id):
        raise ServiceError(404, f"no comparison '{comparison_id}'", "comparison_id", "comparison_not_found")
    return settings.home / "comparisons" / comparison_id


def _job_for(session: Session, comparison_id: str) -> Job | None:
    for job in session.scalars(select(Job).where(Job.kind == "compare").order_by(Job.created_at.desc())):
        if (job.params or {}).get("output") == comparison_id:
            return job
    return None


def _job_state(job: Job) -> dict[str, Any]:
    return {"job": job.id, "status": job.status, "progress": job.progress,
            "error": (job.error or {}).get("message")}


def list_comparisons(session: Session, settings: Settings) -> list[dict[str, Any]]:
    """Every comparison, newest first: those written (by the CLI or a job) and those still queued or running."""
    out: dict[str, dict[str, Any]] = {}
    root = settings.home / "comparisons"
    for path in sorted(root.glob("cmp-*/comparison.json"), key=lambda p: p.stat().st_mtime,
                       reverse=True) if root.exists() else []:
        data = json.loads(path.read_text())
        best = _leader(data)
        out[path.parent.name] = {"id": path.parent.name, "status": "succeeded", "task": data["task"],
                                 "data": Path(data["data"]).name, "n": data["n"],
                                 "candidates": [c["name"] for c in data["candidates"]], "leader": best,
                                 "created_at": path.stat().st_mtime}
    for job in session.scalars(select(Job).where(Job.kind == "compare").order_by(Job.created_at.desc())):
        cid = (job.params or {}).get("output")
        if cid and cid not in out:
            out[cid] = {"id": cid, "task": job.params.get("task"), "data": Path(job.params.get("data", "")).name,
                        "n": None, "candidates": job.params.get("names"), "leader": None,
                        "created_at": job.created_at, **_job_state(job)}
    return sorted(out.values(), key=lambda c: c["created_at"], reverse=True)


def _leader(data: dict[str, Any]) -> dict[str, Any] | None:
    """The candidate best on the table's first metric."""
    rows = data.get("rows") or []
    if not rows or not rows[0]["metrics"]:
        return None
    metric = next(iter(rows[0]["metrics"]))
    pick = min if metric in scoring.LOWER_IS_BETTER else max
    row = pick(rows, key=lambda r: r["metrics"].get(metric, {}).get("value") or 0.0)
    return {"candidate": row["candidate"], "metric": metric, "value": row["metrics"][metric]["value"]}


def get_comparison(session: Session, settings: Settings, comparison_id: str) -> dict[str, Any]:
    """comparison.json, or where its job stands while it is queued, running or failed."""
    path = _folder(settings, comparison_id) / "comparison.json"
    job = _job_for(session, comparison_id)
    if path.exists() and (job is None or job.status == "succeeded"):  # the job's result is written after the files
        data = json.loads(path.read_text())
        data.pop("folder", None)  # a server path
        return {**data, "status": "succeeded", "job": job.id if job else None}
    if job is None:
        raise ServiceError(404, f"no comparison '{comparison_id}'", "comparison_id", "comparison_not_found")
    return {"id": comparison_id, "candidates": [{"name": n} for n in job.params.get("names", [])], **_job_state(job)}


def disagreements(settings: Settings, comparison_id: str, metric: str, candidate: str | None = None,
                  limit: int = 50) -> dict[str, Any]:
    """The items behind a metric's difference between `candidate` (default: each other candidate) and the first,
    side by side: every candidate's answer, each item's scores, which candidate it favours."""
    folder = _folder(settings, comparison_id)
    if not (folder / "items.jsonl").exists():
        raise ServiceError(404, f"no comparison '{comparison_id}' written yet", "comparison_id",
                           "comparison_not_found")
    data = json.loads((folder / "comparison.json").read_text())
    names = [c["name"] for c in data["candidates"]]
    metrics = list(dict.fromkeys(m for row in data["rows"] for m in row["metrics"]))
    if metric not in metrics:
        raise ServiceError(400, f"metric '{metric}' is not in this comparison ({', '.join(metrics)})", "metric")
    if candidate is not None and candidate not in names[1:]:
        raise ServiceError(400, f"candidate '{candidate}': one of {', '.join(names[1:]) or 'none'} (each is compared "
                                f"with the first, {names[0]})", "candidate")
    items = [json.loads(line) for line in (folder / "items.jsonl").read_text().splitlines() if line.strip()]
    if items and "scores" not in items[0]:
        raise ServiceError(409, f"comparison '{comparison_id}' was written before items kept their scores; run it "
                                "again", "comparison_id", "no_item_scores")
    others = [candidate] if candidate else names[1:]
    groups = []
    for other in others:
        found = scoring.metric_disagreements(items, metric, names[0], other)
        groups.append({"candidate": other, "against": names[0], "count": len(found), "items": found[:limit]})
    return {"id": comparison_id, "metric": metric, "task": data["task"], "candidates": names, "groups": groups}


def plot_path(settings: Settings, comparison_id: str) -> Path:
    path = _folder(settings, comparison_id) / "comparison.png"
    if not path.exists():
        raise ServiceError(404, f"no plot for comparison '{comparison_id}' yet", "comparison_id",
                           "comparison_not_found")
    return path


def runs_compared(settings: Settings, run_dir: Path) -> list[dict[str, Any]]:
    """The comparisons a run (or one of its checkpoints) took part in, for its page's lineage."""
    root = settings.home / "comparisons"
    found = []
    run = run_dir.resolve()
    for path in sorted(root.glob("cmp-*/comparison.json")) if root.exists() else []:
        data = json.loads(path.read_text())
        for c in data.get("candidates", []):
            ref = Path(c.get("ref") or "")
            try:
                inside = c.get("kind") == "run" and (ref.resolve() == run or run in ref.resolve().parents)
            except OSError:
                inside = False
            if inside:
                found.append({"id": path.parent.name, "as": c["name"], "task": data["task"], "n": data["n"]})
                break
    return found
