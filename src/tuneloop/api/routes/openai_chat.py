"""/v1/chat/completions, streaming included."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from tuneloop.api.deps import SessionDep
from tuneloop.serve import chat
from tuneloop.services import ServiceError
from tuneloop.services.models import serving_ref

router = APIRouter(tags=["chat"])


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[Message] = Field(min_length=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


def _messages(request: ChatRequest) -> list[dict[str, str]]:
    out = []
    for i, m in enumerate(request.messages):
        content = m.content
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(part.get("text", "") for part in content if part.get("type") == "text")
        if m.role not in {"system", "user", "assistant", "developer", "tool"}:
            raise ServiceError(400, f"messages[{i}].role '{m.role}' is not a chat role", f"messages[{i}].role")
        out.append({"role": "system" if m.role == "developer" else m.role, "content": content or ""})
    return out


def _options(request: ChatRequest) -> chat.Options:
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if request.top_logprobs and not request.logprobs:
        raise ServiceError(400, "top_logprobs needs logprobs: true", "top_logprobs")
    return chat.Options(max_tokens=request.max_completion_tokens or request.max_tokens or 256,
                        temperature=request.temperature, top_p=request.top_p, seed=request.seed, stop=stop,
                        logprobs=request.logprobs, top_logprobs=request.top_logprobs or 0)


@router.post("/chat/completions", response_model=None)
def completions(body: ChatRequest, request: Request, session: SessionDep) -> dict | StreamingResponse:
    ref = serving_ref(session, body.model)
    messages, options = _messages(body), _options(body)
    cache = request.app.state.models
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        with cache.using(ref):  # load it now: a model that cannot load is an error status, not a broken stream
            pass
        return StreamingResponse(_sse(cache, ref, body, messages, options, completion_id, created),
                                 media_type="text/event-stream")
    choices, prompt_tokens, completion_tokens = [], 0, 0
    with cache.using(ref) as (model, tokenizer):
        prompt_tokens = int(chat.prompt_ids(model, tokenizer, messages).shape[1])
        for index in range(body.n):
            seeded = chat.Options(**{**options.__dict__, "seed": None if options.seed is None else options.seed + index})
            answer = chat.complete(model, tokenizer, messages, seeded)
            completion_tokens += answer.completion_tokens
            choices.append({"index": index, "message": {"role": "assistant", "content": answer.text},
                            "finish_reason": answer.finish_reason,
                            "logprobs": {"content": answer.logprobs} if answer.logprobs is not None else None})
    return {"id": completion_id, "object": "chat.completion", "created": created, "model": body.model,
            "choices": choices, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                          "total_tokens": prompt_tokens + completion_tokens}}


def _sse(cache: Any, ref: str, body: ChatRequest, messages: list[dict[str, str]], options: chat.Options,
         completion_id: str, created: int) -> Iterator[str]:
    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> str:
        data: dict[str, Any] = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                                "model": body.model, "choices": choices}
        if usage is not None:
            data["usage"] = usage
        return f"data: {json.dumps(data)}\n\n"

    completion_tokens, prompt_tokens = 0, 0
    with cache.using(ref) as (model, tokenizer):
        prompt_tokens = int(chat.prompt_ids(model, tokenizer, messages).shape[1])
        for index in range(body.n):
            seeded = chat.Options(**{**options.__dict__, "seed": None if options.seed is None else options.seed + index})
            yield chunk([{"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            for piece, finish, tokens in chat.stream(model, tokenizer, messages, seeded):
                if piece:
                    yield chunk([{"index": index, "delta": {"content": piece}, "finish_reason": None}])
                if finish is not None:
                    completion_tokens += tokens
                    yield chunk([{"index": index, "delta": {}, "finish_reason": finish}])
    if body.stream_options and body.stream_options.include_usage:
        yield chunk([], {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                         "total_tokens": prompt_tokens + completion_tokens})
    yield "data: [DONE]\n\n"
