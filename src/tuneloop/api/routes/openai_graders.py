"""/v1/fine_tuning/alpha/graders: check a grader, and grade one answer with it (OpenAI's shapes)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from tuneloop.api.deps import SessionDep, SettingsDep
from tuneloop.evals import graders
from tuneloop.services import graders as grader_service

router = APIRouter(tags=["graders"])


class GraderValidate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grader: dict[str, Any] = Field(description="A grader: string_check, text_similarity, score_model, label_model, "
                                               "python (when the server allows) or multi")


class GraderRun(GraderValidate):
    model_sample: str = Field(description="The model's answer: `sample.output_text` (and `output_json` when it is JSON)")
    item: dict[str, Any] | None = Field(None, description="The data line: `item.<field>` in the grader's templates")


@router.post("/fine_tuning/alpha/graders/validate")
def validate(body: GraderValidate, session: SessionDep, settings: SettingsDep) -> dict:
    """The grader as it will run, or a 400 naming the field at fault."""
    grader = grader_service.parse_grader(settings, body.grader, session=session)
    return {"grader": graders.dump(grader)}


@router.post("/fine_tuning/alpha/graders/run")
def run(body: GraderRun, request: Request, session: SessionDep, settings: SettingsDep) -> dict:
    """`reward`, `sub_rewards` (a multi grader's parts) and `metadata` (errors, scores, time, judge tokens)."""
    return grader_service.run_grader(session, settings, request.app.state.models, request.app.state.embedder,
                                     body.grader, body.model_sample, body.item)
