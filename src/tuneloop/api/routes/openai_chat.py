"""/v1/chat/completions, streaming included.

Generation runs on the model cache's bounded pool (`ModelCache.generation`), in a thread that holds the
model (the cache's lock) from start to end; the request only reads what it produces. When the client
goes away, a cancel event ends generation at the next token and that thread lets go of the model at
once, whatever the client did."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
import logging
from typing import Any, Literal

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from tuneloop.api.deps import SessionDep, SettingsDep
from tuneloop.api.errors import error_body
from tuneloop.models import generation
from tuneloop.models.generation import GenerationOptions
from tuneloop.services import ServiceError
from tuneloop.services.models import api_model_ref

router = APIRouter(tags=["chat"])
log = logging.getLogger("tuneloop.api")

SEED_RANGE = (-(2**62), 2**62)
"""Exact in a JSON number read as a double; seed + choice index stays within what torch.manual_seed takes."""
DEFAULT_MAX_TOKENS = 256


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1, description="A model id from GET /v1/models: a base, a fine-tuned model "
                                                 "or one of its checkpoints")
    messages: list[Message] = Field(min_length=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1, description="At most the model's context less the prompt")
    max_completion_tokens: int | None = Field(None, ge=1, description="Same as max_tokens (OpenAI's newer name)")
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = Field(None, description="Up to 4 strings; generation ends at the first")
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


def _text(content: Any, where: str) -> str:
    if not isinstance(content, list):
        return content or ""
    texts = []
    for j, part in enumerate(content):
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise ServiceError(400, f"{where}.content[{j}]: content parts of type {part.get('type')!r} are not "
                                    "supported; this server takes text (a string, or parts of type 'text')",
                               f"{where}.content[{j}]", "unsupported_content")
        texts.append(part["text"])
    return "".join(texts)


def _messages(request: ChatRequest) -> list[dict[str, str]]:
    out = []
    for i, m in enumerate(request.messages):
        where = f"messages[{i}]"
        if m.role == "tool" and not m.tool_call_id:
            raise ServiceError(400, f"{where}: a 'tool' message needs the tool_call_id it answers",
                               f"{where}.tool_call_id")
        text = _text(m.content, where)
        if m.role != "assistant" and not text.strip():
            raise ServiceError(400, f"{where}.content: a {m.role} message needs text content", f"{where}.content")
        out.append({"role": "system" if m.role == "developer" else m.role, "content": text})
    return out


def _options(request: ChatRequest) -> GenerationOptions:
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if len(stop) > 4:
        raise ServiceError(400, f"stop: at most 4 stop strings, got {len(stop)}", "stop")
    if request.top_logprobs and not request.logprobs:
        raise ServiceError(400, "top_logprobs needs logprobs: true", "top_logprobs")
    return GenerationOptions(max_tokens=request.max_completion_tokens or request.max_tokens or DEFAULT_MAX_TOKENS,
                        temperature=request.temperature, top_p=request.top_p, seed=request.seed, stop=stop,
                        logprobs=request.logprobs, top_logprobs=request.top_logprobs or 0)


def _fit(model: Any, prompt_tokens: int, body: ChatRequest, options: GenerationOptions) -> GenerationOptions:
    """The options with max_tokens within the model's context: a 400 when the client asked for more."""
    context = generation.context_length(model)
    if context is None:
        return options
    param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    if prompt_tokens >= context:
        raise ServiceError(400, f"messages: the prompt is {prompt_tokens} tokens; '{body.model}' reads at most "
                                f"{context} tokens in all", "messages", "context_length_exceeded")
    room = context - prompt_tokens
    if body.max_completion_tokens or body.max_tokens:
        if options.max_tokens > room:
            raise ServiceError(400, f"{param} is {options.max_tokens}, but '{body.model}' has a context of {context} "
                                    f"tokens and the prompt takes {prompt_tokens}: at most {room}", param,
                               "context_length_exceeded")
        return options
    return GenerationOptions(**{**options.__dict__, "max_tokens": min(options.max_tokens, room)})


def _seeded(options: GenerationOptions, index: int) -> GenerationOptions:
    return GenerationOptions(**{**options.__dict__, "seed": None if options.seed is None else options.seed + index})


async def _until_disconnect(request: Request, cancel: threading.Event, work: Callable[[], Any]) -> Any:
    """Await `work()`; if the client disconnects first, set `cancel`, stop waiting and return None."""
    result, error = None, None
    async with anyio.create_task_group() as group:
        async def watch() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            cancel.set()
            group.cancel_scope.cancel()

        group.start_soon(watch)
        try:
            result = await work()
        except Exception as e:  # noqa: BLE001 - raised below, outside the task group (not as a group)
            error = e
        group.cancel_scope.cancel()
    if error is not None:
        raise error
    return result


class CancelOnClose(StreamingResponse):
    """A stream that sets `cancel` however it ends: finished, failed, or the client gone."""

    def __init__(self, content: AsyncIterator[str], cancel: threading.Event):
        super().__init__(content, media_type="text/event-stream")
        self.cancel = cancel

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.cancel.set()


@router.post("/chat/completions", response_model=None)
async def completions(body: ChatRequest, request: Request, session: SessionDep, settings: SettingsDep
                      ) -> dict | Response:
    ref = await anyio.to_thread.run_sync(api_model_ref, session, settings, body.model)
    messages, options = _messages(body), _options(body)
    cache, cancel = request.app.state.models, threading.Event()
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        return await stream_answer(request, ref, body)

    def answer() -> dict:
        with cache.using(ref) as (model, tokenizer):
            if cancel.is_set():  # the client left while the model was busy with others
                return {}
            prompt_tokens = int(generation.prompt_ids(model, tokenizer, messages).shape[1])
            fitted = _fit(model, prompt_tokens, body, options)
            answers = [generation.complete(model, tokenizer, messages, _seeded(fitted, i), cancel)
                       for i in range(body.n)]
        choices = [{"index": i, "message": {"role": "assistant", "content": a.text}, "finish_reason": a.finish_reason,
                    "logprobs": {"content": a.logprobs} if a.logprobs is not None else None}
                   for i, a in enumerate(answers)]
        completion_tokens = sum(a.completion_tokens for a in answers)
        return {"id": completion_id, "object": "chat.completion", "created": created, "model": body.model,
                "choices": choices, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                              "total_tokens": prompt_tokens + completion_tokens}}

    return await _until_disconnect(request, cancel, lambda: asyncio.wrap_future(cache.generation.submit(answer))) \
        or {}


async def stream_answer(request: Request, ref: str, body: ChatRequest) -> Response:
    """The streamed answer of the model `ref` to `body` (OpenAI's chunks, named `body.model`): chat completions,
    and the playground, whose slots stream under their letter so the model stays hidden."""
    messages, options = _messages(body), _options(body)
    cache, cancel = request.app.state.models, threading.Event()
    items = _produce(cache, ref, body, messages, options, cancel)
    first = await _until_disconnect(request, cancel, items.__anext__)
    if first is None:  # the client left while the model was busy: nobody to answer
        return Response(status_code=204)
    if first[0] == "error":  # before anything was sent: an error status, not a broken stream
        raise first[1]
    return CancelOnClose(_sse(items, first[1], body, f"chatcmpl-{uuid.uuid4().hex}", int(time.time())), cancel)


async def _produce(cache: Any, ref: str, body: ChatRequest, messages: list[dict[str, str]], options: GenerationOptions,
                   cancel: threading.Event) -> AsyncIterator[tuple]:
    """Items from a generating thread: ("ready", prompt tokens), then ("piece", index, text, finish, tokens)...,
    or ("error", exception) at any point. Leaving early sets `cancel`."""
    loop, queue = asyncio.get_running_loop(), asyncio.Queue()

    def put(item: tuple) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (server shutting down): nobody is reading
            cancel.set()

    def generate() -> None:
        try:
            with cache.using(ref) as (model, tokenizer):
                if cancel.is_set():  # the client left while the model was busy with others
                    return
                prompt_tokens = int(generation.prompt_ids(model, tokenizer, messages).shape[1])
                fitted = _fit(model, prompt_tokens, body, options)
                put(("ready", prompt_tokens))
                for index in range(body.n):
                    # closed here, inside `using`: generation has stopped before the model is let go
                    with contextlib.closing(generation.stream(model, tokenizer, messages, _seeded(fitted, index),
                                                        cancel)) as pieces:
                        for piece, finish, tokens in pieces:
                            put(("piece", index, piece, finish, tokens))
                            if cancel.is_set():
                                return
        except Exception as e:  # noqa: BLE001 - handed to the request, which reports it to the client
            put(("error", e))
        finally:
            put(("end",))

    cache.generation.submit(generate)
    try:
        while (item := await queue.get())[0] != "end":
            yield item
    finally:
        cancel.set()


async def _sse(items: AsyncIterator[tuple], prompt_tokens: int, body: ChatRequest, completion_id: str,
               created: int) -> AsyncIterator[str]:
    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> str:
        data: dict[str, Any] = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                                "model": body.model, "choices": choices}
        if usage is not None:
            data["usage"] = usage
        return f"data: {json.dumps(data)}\n\n"

    completion_tokens, started = 0, set()
    async for item in items:
        if item[0] == "error":  # after the stream began: OpenAI's error event, then the end
            e = item[1]
            if not isinstance(e, ServiceError):
                log.error("generation failed in a stream", exc_info=e)
            status, message = (e.status, e.message) if isinstance(e, ServiceError) else (500, f"generation failed "
                                                                                             f"({type(e).__name__})")
            yield f"data: {json.dumps(error_body(status, message, getattr(e, 'param', None)))}\n\n"
            return
        _, index, piece, finish, tokens = item
        if index not in started:
            started.add(index)
            yield chunk([{"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        if piece:
            yield chunk([{"index": index, "delta": {"content": piece}, "finish_reason": None}])
        if finish is not None:
            completion_tokens += tokens
            yield chunk([{"index": index, "delta": {}, "finish_reason": finish}])
    if body.stream_options and body.stream_options.include_usage:
        yield chunk([], {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                         "total_tokens": prompt_tokens + completion_tokens})
    yield "data: [DONE]\n\n"
