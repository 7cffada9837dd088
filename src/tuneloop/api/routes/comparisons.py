"""/api/comparisons and /api/arenas: comparisons of models, fine-tunes and prompt baselines (`tuneloop compare` as a
job), and arenas (models' answers judged in pairs by people and an LLM judge), for API keys and for people logged in
to the UI (admins start them; admins and reviewers read them)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from tuneloop.api.deps import Actor, ActorDep, SessionDep, SettingsDep
from tuneloop.services import ServiceError
from tuneloop.services import comparison_jobs as service
from tuneloop.services import jobs as job_service
from tuneloop.services.auth import check_project_access, require_admin

router = APIRouter(tags=["comparisons"])


def _reader(actor: Actor) -> None:
    if actor.user is not None and actor.user.role == "annotator":
        raise ServiceError(403, f"'{actor.user.username}' is an annotator; comparisons are for admins and reviewers",
                           None, "forbidden")


@router.post("/comparisons")
def create_comparison(body: service.ComparisonCreate, session: SessionDep, settings: SettingsDep,
                      actor: ActorDep) -> dict:
    """Queue a comparison (a job of kind `compare`): each candidate scored on the test data, metrics with 95%
    intervals, paired tests against the first, latency; its id is ready at once (`GET /api/comparisons/{id}`)."""
    if actor.user is not None:
        require_admin(actor.user)
    job = service.start_comparison(session, settings, body)
    return {"id": job.params["output"], "job": job.id, "status": job.status}


@router.get("/comparisons")
def list_comparisons(session: SessionDep, settings: SettingsDep, actor: ActorDep) -> dict:
    _reader(actor)
    return {"object": "list", "data": service.list_comparisons(session, settings)}


@router.get("/comparisons/{comparison_id}")
def get_comparison(session: SessionDep, settings: SettingsDep, actor: ActorDep, comparison_id: str) -> dict:
    """The table (comparison.json: rows of metrics with intervals and paired tests), or its job's state."""
    _reader(actor)
    return service.get_comparison(session, settings, comparison_id)


@router.get("/comparisons/{comparison_id}/disagreements")
def get_disagreements(settings: SettingsDep, actor: ActorDep, comparison_id: str,
                      metric: str = Query(min_length=1, max_length=40), candidate: str | None = None,
                      limit: int = Query(50, ge=1, le=1000)) -> dict:
    """The items behind a metric's difference between a candidate and the first, side by side, largest first."""
    _reader(actor)
    return service.disagreements(settings, comparison_id, metric, candidate, limit)


@router.get("/comparisons/{comparison_id}/plot", response_class=FileResponse,
            responses={200: {"content": {"image/png": {}}, "description": "The table as a plot"}})
def get_plot(settings: SettingsDep, actor: ActorDep, comparison_id: str) -> FileResponse:
    _reader(actor)
    return FileResponse(service.plot_path(settings, comparison_id), media_type="image/png")


@router.post("/comparisons/{comparison_id}/cancel")
def cancel_comparison(session: SessionDep, actor: ActorDep, comparison_id: str) -> dict:
    if actor.user is not None:
        require_admin(actor.user)
    job = service._job_for(session, comparison_id)
    if job is None:
        raise ServiceError(404, f"no comparison job for '{comparison_id}'", "comparison_id", "comparison_not_found")
    job_service.request_cancel(session, job.id, kind="compare")
    return {"id": comparison_id, "job": job.id, "status": job.status}


class ArenaCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=100, description="The arena's (its review project's) name")
    models: list[str] = Field(min_length=2, max_length=4, description="Models the server serves (GET /v1/models)")
    data: str = Field(min_length=1, description="Prompts: an uploaded file id, a dataset version, an allowed path")
    rows: int = Field(50, ge=1, le=1000)
    max_tokens: int = Field(256, ge=1, le=2048)
    judge: str | None = Field(None, min_length=1, description="An LLM judge: a served model or the judge endpoint's")


class ArenaJudge(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    judge: str = Field(min_length=1)


def _judge_ref(session, settings, judge: str) -> str:
    from tuneloop.services.models import api_model_ref

    try:
        return api_model_ref(session, settings, judge)
    except ServiceError:
        if settings.judge_base_url:
            return judge  # the endpoint's model
        raise ServiceError(400, f"judge: no model '{judge}' here to judge with: name a model from GET /v1/models, or "
                                "set TUNELOOP_JUDGE_BASE_URL", "judge") from None


@router.post("/arenas")
def create_arena(body: ArenaCreate, session: SessionDep, settings: SettingsDep, actor: ActorDep) -> dict:
    """Queue an arena: each model answers the first `rows` prompts, every pair of answers becomes a record of the
    review project `name` (task arena), and the judge, if given, judges each pair in both orders."""
    from tuneloop.services import arena

    if actor.user is not None:
        require_admin(actor.user)
    refs = [service.client_candidate(session, settings, m, f"models[{i}]") for i, m in enumerate(body.models)]
    data = service.client_data(session, settings, body.data, "data")
    judge_ref = _judge_ref(session, settings, body.judge) if body.judge else None
    job = arena.create_arena(session, settings, name=body.name, models=body.models, refs=refs, data=data,
                             rows=body.rows, max_tokens=body.max_tokens, judge=body.judge, judge_ref=judge_ref)
    return {"name": body.name, "job": job.id, "status": job.status}


@router.post("/arenas/{ref}/judge")
def judge_arena(body: ArenaJudge, session: SessionDep, settings: SettingsDep, actor: ActorDep, ref: str) -> dict:
    from tuneloop.services import arena
    from tuneloop.services.review import projects

    if actor.user is not None:
        require_admin(actor.user)
    project = projects.get_project(session, ref)
    job = arena.judge_arena(session, settings, project, body.judge, _judge_ref(session, settings, body.judge))
    return {"name": project.name, "job": job.id, "status": job.status}


@router.get("/arenas/{ref}")
def get_arena(session: SessionDep, actor: ActorDep, ref: str,
              resamples: int = Query(1000, ge=100, le=10000)) -> dict:
    """Win rates and a Bradley–Terry ranking (95% bootstrap intervals) by people and by each judge, and each
    judge's agreement (Cohen's kappa) with people on the pairs both judged."""
    from tuneloop.services import arena
    from tuneloop.services.review import projects

    _reader(actor)
    project = projects.get_project(session, ref)
    if actor.user is not None:
        check_project_access(session, actor.user, project)
    return arena.results(session, project, resamples=resamples)


# ---------------------------------------------------------------------- the playground
class PlaygroundStart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    models: list[str] = Field(min_length=2, max_length=4, description="2 to 4 models the server serves")
    prompt: str | None = Field(None, max_length=20000, description="The user's message")
    system: str | None = Field(None, max_length=20000)
    data: str | None = Field(None, min_length=1, description="Or a row of a dataset: an uploaded file id, a dataset "
                                                             "version or an allowed path")
    row: int | None = Field(None, ge=0, le=10_000_000)


class PlaygroundStream(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    max_tokens: int = Field(256, ge=1, le=2048)
    temperature: float = Field(0.0, ge=0, le=2)


class PlaygroundJudgement(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    winner: str = Field(min_length=1, max_length=3, description="The better answer's slot (A, B, ...), or tie")
    answers: dict[str, str] = Field(max_length=4, description="The answer shown in each slot")


@router.post("/playground")
def start_playground(body: PlaygroundStart, session: SessionDep, settings: SettingsDep, actor: ActorDep) -> dict:
    """A prompt for 2-4 models side by side, behind shuffled slots (A, B, ...): which model is which stays hidden
    until the person has judged."""
    from tuneloop.services import playground

    _reader(actor)
    return playground.start(session, settings, actor.user, body.models, body.prompt, body.system, body.data,
                            body.row)


@router.post("/playground/{play_id}/slots/{slot}/stream", response_model=None,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "OpenAI's chat.completion.chunk events, named by the slot's letter"}})
async def stream_playground_slot(body: PlaygroundStream, request: Request, session: SessionDep, actor: ActorDep,
                                 play_id: str, slot: str):
    """One slot's answer, streamed as chat completion chunks whose `model` is the slot's letter."""
    from tuneloop.api.routes.openai_chat import ChatRequest, stream_answer
    from tuneloop.services import playground

    _reader(actor)
    ref, messages = playground.slot(session, play_id, slot, actor.user)
    chat = ChatRequest(model=slot, messages=messages, stream=True, max_tokens=body.max_tokens,
                       temperature=body.temperature)
    return await stream_answer(request, ref, chat)


@router.post("/playground/{play_id}/judgement")
def judge_playground(body: PlaygroundJudgement, session: SessionDep, settings: SettingsDep, actor: ActorDep,
                     play_id: str) -> dict:
    """The person's judgement (the better slot, or tie) of the answers they were shown; the answer reveals which
    model was behind each slot. Stored in the `playground` arena project."""
    from tuneloop.services import playground

    _reader(actor)
    return playground.judge(session, settings, actor.user, play_id, body.winner, body.answers)
