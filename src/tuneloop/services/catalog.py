"""What lives in the home folder, for the native API: dataset versions, training runs, evaluations."""

from __future__ import annotations

import json
from typing import Any

import yaml

from tuneloop.config.settings import Settings
from tuneloop.data.problems import DataError
from tuneloop.data.versions import list_imports, resolve_version
from tuneloop.models.run_folder import FINISHED, RunFolder, Step, run_status
from tuneloop.services import ServiceError


def datasets(settings: Settings) -> list[dict[str, Any]]:
    root = settings.datasets_dir
    out = []
    for folder in sorted(root.glob("ds-*")) if root.exists() else []:
        meta = json.loads((folder / "meta.json").read_text())
        out.append({k: meta.get(k) for k in ("id", "name", "format", "examples", "created_at", "source")})
    return out


def dataset(settings: Settings, ref: str) -> dict[str, Any]:
    try:
        version = resolve_version(settings.datasets_dir, ref)
    except DataError:  # its message names the server's folders, which are no client's business
        raise ServiceError(404, f"no dataset version or name '{ref}' (GET /api/datasets lists them)", "dataset",
                           "dataset_not_found") from None
    meta = {k: v for k, v in version.meta.items() if k != "lines"}
    meta["imports"] = [i for i in list_imports(settings.datasets_dir) if i["version"] == version.id]
    return meta


def _run_folder(settings: Settings, run_id: str) -> RunFolder:
    folder = RunFolder(settings.runs_dir / run_id)
    if "/" in run_id or run_id.startswith(".") or not folder.is_run():
        raise ServiceError(404, f"no run '{run_id}' (GET /api/runs lists them)", "run_id", "run_not_found")
    return folder


def run_summary(settings: Settings, folder: RunFolder) -> dict[str, Any]:
    events = folder.read_events()
    recipe = yaml.safe_load(folder.recipe.read_text())
    steps = [e for e in events if isinstance(e, Step)]
    return {"id": folder.id, "model": recipe.get("model"), "method": recipe.get("method"),
            "adapter": (recipe.get("adapter") or {}).get("type"), "status": run_status(events),
            "steps": steps[-1].step if steps else 0, "total_steps": steps[-1].total_steps if steps else None,
            "last_loss": steps[-1].loss if steps else None, "has_model": folder.has_model()}


def runs(settings: Settings) -> list[dict[str, Any]]:
    root = settings.runs_dir
    folders = sorted((RunFolder(p) for p in root.iterdir() if RunFolder(p).is_run()),
                     key=lambda f: f.path.stat().st_mtime, reverse=True) if root.exists() else []
    return [run_summary(settings, folder) for folder in folders]


def run(settings: Settings, run_id: str) -> dict[str, Any]:
    folder = _run_folder(settings, run_id)
    meta = folder.meta()
    return {**run_summary(settings, folder), "recipe": yaml.safe_load(folder.recipe.read_text()),
            "result": meta.to_json() if meta else None,
            "evaluations": [{"file": p.name, **json.loads(p.read_text())} for p in folder.evaluations()]}


def run_events(settings: Settings, run_id: str, after: int = 0, limit: int = 1000) -> dict[str, Any]:
    """A page of a run's events as written, and the run's status (the browser shows it as it is)."""
    events = _run_folder(settings, run_id).read_events()
    page = [e.to_json() for e in events[after : after + limit]]
    return {"object": "list", "data": page, "next": after + len(page), "has_more": after + len(page) < len(events),
            "status": (status := run_status(events)), "finished": status in FINISHED}


def run_rollouts(settings: Settings, run_id: str, limit: int = 20) -> dict[str, Any]:
    """The last rollouts an online RL run kept (prompt, completion, each reward, advantage), newest last."""
    return {"object": "list", "data": _run_folder(settings, run_id).read_rollouts(limit)}


def evaluations(settings: Settings) -> list[dict[str, Any]]:
    """Every saved evaluation (eval-<data>.json beside its run), newest first, without per-example samples."""
    root = settings.runs_dir
    files = sorted(root.glob("*/eval-*.json"), key=lambda p: p.stat().st_mtime, reverse=True) if root.exists() else []
    out = []
    for path in files:
        result = json.loads(path.read_text())
        result.pop("samples", None)
        out.append({"run": path.parent.name, "file": path.name, **result})
    return out


def lineage(session: Any, settings: Settings, run_id: str) -> dict[str, Any]:
    """Where a run came from and what became of it: its data (dataset versions linked), the model it started from,
    its checkpoints, its evaluations, the model id it is served under, the job and search that trained it, and the
    comparisons it took part in."""
    from sqlalchemy import select

    from tuneloop.services.comparison_jobs import runs_compared
    from tuneloop.store.tables import Job

    folder = _run_folder(settings, run_id)
    recipe = yaml.safe_load(folder.recipe.read_text()) or {}
    data = recipe.get("data") or {}
    sources = [*(data.get("train") or []), *([data["validation"]] if data.get("validation") else [])]
    known = {d["id"]: d for d in datasets(settings)} | {d["name"]: d for d in datasets(settings)}
    shown = []
    for i, source in enumerate(sources):
        path = source["path"] if isinstance(source, dict) else str(source)
        version = known.get(path)
        shown.append({"role": "validation" if data.get("validation") and i == len(sources) - 1 else "train",
                      "path": path if version else path.rsplit("/", 1)[-1],
                      "version": version["id"] if version else None})
    job = session.scalar(select(Job).where(Job.run_dir.is_not(None), Job.run_dir.like(f"%/{run_id}")))
    checkpoints = sorted(p.name for p in folder.checkpoints.glob("step-*")) if folder.checkpoints.is_dir() else []
    started = recipe.get("model")
    return {"data": shown, "started_from": started, "started_from_run": started if started and
            (settings.runs_dir / str(started)).is_dir() else None,
            "checkpoints": checkpoints, "evaluations": [p.name for p in folder.evaluations()],
            "served_as": (job.fine_tuned_model if job is not None and job.fine_tuned_model else
                          folder.id if folder.has_model() else None),
            "job": {"id": job.id, "kind": job.kind, "status": job.status,
                    "search": (job.params or {}).get("search")} if job is not None else None,
            "comparisons": runs_compared(settings, folder.path)}
