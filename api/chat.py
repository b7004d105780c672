"""OpenAI-compatible ``/v1/chat/completions`` and ``/v1/models``, so any OpenAI client can use
chronorag as a model. The last user message is the question; the answer's citations travel in the
text (a "Sources:" tail of ``[n] doc_id``) and in the extra field ``chronorag.citations``."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from chronorag.api.auth import JSON_BODY, require
from chronorag.api.deps import Service, get_service
from chronorag.api.errors import ApiError, error_body
from chronorag.api.models import MAX_NEW_TOKENS, MAX_TOP_K, CitationOut, ErrorOut
from chronorag.api.routes_query import GENERATION_ERRORS, begin, failure, generate, sse_event, stream
from chronorag.results import Answer

router = APIRouter(prefix="/v1", tags=["openai"])
MODEL_ID = "chronorag"
NOTHING_FOUND = "I found no documents that answer this question."
_E = {"model": ErrorOut}
SSE = {"text/event-stream": {"schema": {
    "type": "object", "required": ["data"],
    "properties": {"data": {"type": "string", "description": "a chat.completion.chunk as JSON, {error}, or [DONE]"}}}}}


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: StrictStr
    text: StrictStr | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls...: accepted, not used
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: StrictStr | list[ContentPart] | None = None


class ChatOptions(BaseModel):
    """chronorag's own retrieval options, in the extra field ``chronorag``."""

    model_config = ConfigDict(extra="forbid")
    top_k: int = Field(4, ge=1, le=MAX_TOP_K)
    budget: int | None = Field(None, ge=1)
    since: StrictStr | None = None
    until: StrictStr | None = None
    doc_ids: list[StrictStr] | None = None
    sources: list[StrictStr] | None = None


class ChatIn(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, top_p, user...: OpenAI clients send them
    model: StrictStr = MODEL_ID
    messages: list[ChatMessage] = Field(min_length=1, json_schema_extra={
        "contains": {"type": "object", "required": ["role", "content"],
                     "properties": {"role": {"const": "user"}, "content": {"type": "string", "minLength": 1}}}})
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    chronorag: ChatOptions | None = None


class ChatReply(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatReply
    finish_reason: str | None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChronoragExtra(BaseModel):
    citations: list[CitationOut]
    stale: dict[str, int]
    timings: dict[str, Any]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    chronorag: ChronoragExtra


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def question_of(messages: list[ChatMessage]) -> str:
    for m in reversed(messages):
        if m.role == "user":
            if isinstance(m.content, str):
                return m.content
            parts = [p.text for p in m.content or () if p.type == "text" and p.text]
            if parts:
                return "\n".join(parts)
            raise ApiError(400, "the last user message holds no text")
    raise ApiError(400, "no user message: the last one with role 'user' is the question")


def sources_tail(answer: Answer) -> str:
    if not answer.citations:
        return ""
    lines = []
    for c in answer.citations:
        when = f" ({c.published_at.date().isoformat()})" if c.published_at is not None else ""
        lines.append(f"[{c.n}] {c.doc_id}{when}")
    return "\n\nSources:\n" + "\n".join(lines)


def _extra(answer: Answer) -> dict[str, Any]:
    return {"citations": [c.to_dict() for c in answer.citations], "stale": dict(answer.stale),
            "timings": answer.timings.to_dict()}


def _finish_reason(answer: Answer) -> str:
    return "length" if answer.finish_reason == "length" else "stop"


def completion(answer: Answer, model: str, cid: str, created: int, completion_tokens: int) -> dict[str, Any]:
    text = answer.text if answer.text is not None else NOTHING_FOUND
    prompt = answer.cache.prompt_tokens if answer.cache is not None else 0
    out = ChatCompletion(
        id=cid, created=created, model=model,
        choices=[ChatChoice(index=0, message=ChatReply(content=text + sources_tail(answer)),
                            finish_reason=_finish_reason(answer))],
        usage=Usage(prompt_tokens=prompt, completion_tokens=completion_tokens,
                    total_tokens=prompt + completion_tokens),
        chronorag=ChronoragExtra.model_validate(_extra(answer)))
    return out.model_dump(mode="json")


def _chunk(cid: str, created: int, model: str, delta: dict[str, Any], finish: str | None = None,
           **extra: Any) -> str:
    body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    return json.dumps(body, ensure_ascii=False)


@router.get("/models", response_model=ModelList, dependencies=[require("read")],
            summary="The models this server answers as (OpenAI-compatible)")
def models(service: Service = Depends(get_service)) -> ModelList:
    return ModelList(data=[ModelCard(id=MODEL_ID, created=int(service.started), owned_by="chronorag")])


@router.post("/chat/completions", response_model=ChatCompletion, dependencies=[require("read"), JSON_BODY],
             responses={200: {"content": SSE, "description": "a chat completion; with stream=true, chunks, "
                              "then data: [DONE]"}, 400: _E, **GENERATION_ERRORS},
             summary="OpenAI-compatible chat: the last user message is answered from the documents")
async def chat_completions(body: ChatIn, service: Service = Depends(get_service)):
    question = question_of(body.messages)
    opts = body.chronorag or ChatOptions()
    retrieve = dict(since=opts.since, until=opts.until, doc_ids=opts.doc_ids, sources=opts.sources)
    max_new = body.max_completion_tokens or body.max_tokens
    plan, deadline = await run_in_threadpool(begin, service, question, opts.top_k, retrieve, opts.budget, max_new)
    cid, created, model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), body.model
    if not body.stream:
        tokens = [0]

        def count(ev: Any) -> None:
            if not isinstance(ev, Answer):
                tokens[0] += 1

        answer = await run_in_threadpool(generate, service, plan, deadline, "chat", count)
        return completion(answer, model, cid, created, tokens[0])
    run = stream(service, plan, deadline)

    async def sse():
        yield sse_event(_chunk(cid, created, model, {"role": "assistant", "content": ""}))
        try:
            async for ev in run:
                if isinstance(ev, Answer):
                    service.metrics.observe_answer(ev, "chat")
                    tail = sources_tail(ev) if ev.text is not None else NOTHING_FOUND + sources_tail(ev)
                    if tail:
                        yield sse_event(_chunk(cid, created, model, {"content": tail}))
                    yield sse_event(_chunk(cid, created, model, {}, _finish_reason(ev), chronorag=_extra(ev)))
                elif ev.text:
                    yield sse_event(_chunk(cid, created, model, {"content": ev.text}))
        except Exception as exc:
            err = failure(exc)
            if err.status == 504:
                service.metrics.timeouts.inc()
            yield sse_event(json.dumps(error_body(err.message, err.type)))
        yield sse_event("[DONE]")

    return EventSourceResponse(sse(), sep="\n", ping=15)
