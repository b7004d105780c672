"""``POST /v1/query``: retrieve, fit the chunks to the budget, generate; JSON or server-sent events.

The planner is not built yet: answers come from the engine's top-k path, its chunks cut to the
token budget lowest-ranked first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from chronorag.errors import UserFacingError
from chronorag.api import generation
from chronorag.api.auth import JSON_BODY, require
from chronorag.api.deps import Service, get_service
from chronorag.api.errors import ApiError, error_body, log
from chronorag.api.models import AnswerOut, ErrorOut, QueryIn
from chronorag.api.routes_read import retrieve_kwargs
from chronorag.results import Answer

router = APIRouter(prefix="/v1", tags=["answers"])
_E = {"model": ErrorOut}
GENERATION_ERRORS = {429: _E, 503: _E, 504: _E}
# an event stream's schema describes one event (OpenAPI 3.1; 3.2 would call it itemSchema)
SSE_EVENT = {"type": "object", "required": ["data"],
             "properties": {"event": {"type": "string", "enum": ["token", "answer", "error"]},
                            "data": {"type": "string", "description": "JSON: {text}, the Answer, or {error}"},
                            "id": {"type": "string"}, "retry": {"type": "integer"}}}
SSE = {"text/event-stream": {"schema": SSE_EVENT}}


def sse_event(data: str, event: str | None = None) -> ServerSentEvent:
    return ServerSentEvent(data, event=event, sep="\n")  # '\n\n' ends an event, as OpenAI's streams do


def answer_out(answer: Answer, cost: dict[str, Any]) -> dict[str, Any]:
    out = answer.to_dict()
    out["cost"] = cost
    out["planner"] = "topk"
    return AnswerOut.model_validate(out).model_dump(mode="json")


def finish(engine, plan: generation.Plan, answer: Answer) -> dict[str, Any]:
    return answer_out(answer, generation.cost(engine, plan, answer))


def failure(exc: BaseException) -> ApiError:
    """A generation error as the client sees it; bugs are logged, their text kept server-side."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ValueError):
        return ApiError(400, str(exc))
    if isinstance(exc, UserFacingError):  # a model, store or backend problem: its message is for users
        log.error("generation failed: %s", exc)
        return ApiError(503, str(exc), "generation_unavailable")
    log.error("generation failed", exc_info=(type(exc), exc, exc.__traceback__))
    return ApiError(503, "generation failed (see the server log)", "generation_unavailable")


def _check_planner(body: QueryIn) -> None:
    if body.planner != "topk":
        raise ApiError(400, f"planner {body.planner!r} is not available yet; use planner 'topk' "
                       "(the top-k chunks, cut to the budget)", "not_available")
    if body.budget_ms is not None:
        raise ApiError(400, "budget_ms needs a planner, which is not available yet; give budget (tokens)",
                       "not_available")


def begin(service: Service, question: str, top_k: int, retrieve: dict[str, Any], budget: int | None,
          max_new_tokens: int | None) -> tuple[generation.Plan, float]:
    """Take a generation slot (429 when none is free) and plan; the slot is released on error."""
    try:
        service.slots.acquire()
    except ApiError:
        service.metrics.rejected.inc()
        raise
    try:
        deadline = time.monotonic() + service.settings.api_generation_timeout_s
        return generation.plan(service.engine, question, top_k, retrieve, budget, max_new_tokens), deadline
    except BaseException:
        service.slots.release()
        raise


def generate(service: Service, plan: generation.Plan, deadline: float, endpoint: str,
             on_event: Callable[[Any], None] | None = None) -> Answer:
    """The whole answer in this thread (a worker thread); releases the slot."""
    try:
        answer = generation.run_to_end(lambda: generation.events(service.engine, plan), deadline,
                                       service.settings.api_generation_timeout_s, on_event)
    except BaseException as exc:
        err = failure(exc)
        if err.status == 504:
            service.metrics.timeouts.inc()
        raise err from None
    finally:
        service.slots.release()
    service.metrics.observe_answer(answer, endpoint)
    return answer


def stream(service: Service, plan: generation.Plan, deadline: float) -> generation.StreamRun:
    return generation.StreamRun(lambda: generation.events(service.engine, plan), deadline,
                                service.settings.api_generation_timeout_s, service.slots.release)


@router.post("/query", response_model=AnswerOut, dependencies=[require("read"), JSON_BODY],
             responses={200: {"content": SSE, "description": "an Answer; with stream=true, token events "
                              "then one 'answer' event"}, 400: _E, **GENERATION_ERRORS},
             summary="Answer a question from the retrieved chunks (top-k, fitted to a token budget)")
async def query(body: QueryIn, service: Service = Depends(get_service)):
    _check_planner(body)
    plan, deadline = await run_in_threadpool(begin, service, body.question, body.top_k, retrieve_kwargs(body),
                                             body.budget, body.max_new_tokens)
    engine = service.engine
    if not body.stream:
        answer = await run_in_threadpool(generate, service, plan, deadline, "query")
        return await run_in_threadpool(finish, engine, plan, answer)
    run = stream(service, plan, deadline)

    async def sse():
        try:
            async for ev in run:
                if isinstance(ev, Answer):
                    service.metrics.observe_answer(ev, "query")
                    out = await run_in_threadpool(finish, engine, plan, ev)
                    yield sse_event(json.dumps(out, ensure_ascii=False), "answer")
                else:
                    yield sse_event(json.dumps({"text": ev.text}, ensure_ascii=False), "token")
        except Exception as exc:
            err = failure(exc)
            if err.status == 504:
                service.metrics.timeouts.inc()
            yield sse_event(json.dumps(error_body(err.message, err.type)), "error")

    return EventSourceResponse(sse(), sep="\n", ping=15)
