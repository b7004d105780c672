"""Answer generation for the query and chat routes: a bounded queue, the token budget of the
top-k path, a time limit, and a thread that feeds a stream.

The engine's generator serves one request at a time, so at most ``api_generation_queue``
requests may be running or waiting (beyond that: 429 with Retry-After). The time limit is checked
between tokens; a generation past it is closed, which stops the model at its next token.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from chronorag.api.errors import ApiError
from chronorag import arguments
from chronorag.engine import ChronoRAG
from chronorag.periods import resolve_tz
from chronorag.results import Answer, AnswerTimings

log = logging.getLogger("chronorag.api")
RETRY_AFTER_S = "2"


class GenerationSlots:
    def __init__(self, size: int) -> None:
        self.size = size
        self._used = 0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            if self._used >= self.size:
                raise ApiError(429, f"the generation queue is full ({self.size} requests running or waiting); "
                               "retry later", "queue_full", headers={"Retry-After": RETRY_AFTER_S})
            self._used += 1

    def release(self) -> None:
        with self._lock:
            self._used = max(0, self._used - 1)

    @property
    def used(self) -> int:
        return self._used


@dataclass
class Plan:
    """What to generate from: the engine's top-k path with ``top_k`` chunks, or no generation
    (``empty``: the budget fits none of the retrieved chunks)."""

    question: str
    top_k: int
    retrieve: dict[str, Any]
    max_new_tokens: int | None
    budget: int | None
    tokens: dict[int, int] = field(default_factory=dict)  # chunk id -> tokens
    empty: Answer | None = None


def _token_counter(engine: ChronoRAG) -> Callable[[list[tuple[int, str]]], dict[int, int]]:
    """The generator's tokenizer when it has one, else the chunks' stored token counts."""
    try:
        tok = getattr(engine.generator, "tokenizer", None)
    except Exception as exc:  # a model that cannot load: generation reports it; counting falls back
        log.debug("no tokenizer for budgets: %s", exc)
        tok = None
    if tok is not None and callable(getattr(tok, "encode", None)):
        def count(chunks: list[tuple[int, str]]) -> dict[int, int]:
            out = {}
            for chunk_id, text in chunks:
                try:
                    out[chunk_id] = len(tok.encode(text, add_special_tokens=False))
                except TypeError:  # a tokenizer without that keyword
                    out[chunk_id] = len(tok.encode(text))
            return out
        return count

    def stored(chunks: list[tuple[int, str]]) -> dict[int, int]:
        found = engine.store.get_chunks([c for c, _ in chunks])
        return {c: (found[c].n_tokens if c in found else 0) for c, _ in chunks}
    return stored


def check_request(engine: ChronoRAG, question: Any, top_k: int, retrieve: dict[str, Any]) -> None:
    """The engine's own argument check, before a stream starts (a bad date is a 400, not an event)."""
    arguments.retrieval_request(question, top_k, tz=resolve_tz(engine.settings.default_tz), **retrieve)


def plan(engine: ChronoRAG, question: str, top_k: int, retrieve: dict[str, Any], budget: int | None,
         max_new_tokens: int | None) -> Plan:
    """Fit the top-k chunks to ``budget`` (generator tokens): lowest-ranked chunks go first."""
    check_request(engine, question, top_k, retrieve)
    p = Plan(question, top_k, retrieve, max_new_tokens, budget)
    if budget is None:
        return p
    t0 = time.perf_counter()
    hits = engine.retrieve(question, top_k=top_k, **retrieve)
    p.tokens = _token_counter(engine)([(h.chunk_id, h.text) for h in hits])
    used, keep = 0, 0
    for h in hits:
        if used + p.tokens[h.chunk_id] > budget:
            break
        used += p.tokens[h.chunk_id]
        keep += 1
    if hits and keep == 0:
        ms = (time.perf_counter() - t0) * 1000
        first = p.tokens[hits[0].chunk_id]
        p.empty = Answer(question, None, (), (), AnswerTimings(ms, 0.0, ms),
                         reason=f"the budget of {budget} tokens fits none of the retrieved chunks "
                                f"(the best one has {first})", stale=hits.stale, query=hits.query)
    p.top_k = max(keep, 1)
    return p


def events(engine: ChronoRAG, p: Plan) -> Iterator[Any]:
    """TokenEvent..., then the Answer (from the engine's top-k path)."""
    if p.empty is not None:
        yield p.empty
        return
    yield from engine.answer_stream(p.question, top_k=p.top_k, max_new_tokens=p.max_new_tokens, **p.retrieve)


def cost(engine: ChronoRAG, p: Plan, answer: Answer) -> dict[str, Any]:
    missing = [(h.chunk_id, h.text) for h in answer.chunks if h.chunk_id not in p.tokens]
    if missing:
        p.tokens.update(_token_counter(engine)(missing))
    return {"tokens": sum(p.tokens[h.chunk_id] for h in answer.chunks), "budget": p.budget}


def timed_out(limit_s: float) -> ApiError:
    return ApiError(504, f"the answer took longer than the generation time limit of {limit_s:g} s "
                    "(api_generation_timeout_s)", "timeout")


def run_to_end(make_events: Callable[[], Iterator[Any]], deadline: float, limit_s: float,
               on_event: Callable[[Any], None] | None = None) -> Answer:
    """Consume the events in this thread; the Answer, or a 504 past the deadline."""
    it = make_events()
    try:
        for ev in it:
            if on_event is not None:
                on_event(ev)
            if isinstance(ev, Answer):
                return ev
            if time.monotonic() > deadline:
                raise timed_out(limit_s)
    finally:
        it.close()
    raise RuntimeError("the answer stream ended without an Answer")


class StreamRun:
    """Runs the events in a thread of its own and hands them to an async consumer. The thread
    starts at once and releases the generation slot when it ends, whatever the client does."""

    def __init__(self, make_events: Callable[[], Iterator[Any]], deadline: float, limit_s: float,
                 release: Callable[[], None]) -> None:
        self._make, self._deadline, self._limit, self._release = make_events, deadline, limit_s, release
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._stop = threading.Event()
        threading.Thread(target=self._run, name="chronorag-generate", daemon=True).start()

    def _put(self, item: tuple[str, Any]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is gone (server shutting down): nobody is listening
            self._stop.set()

    def _run(self) -> None:
        try:
            it = self._make()
            try:
                for ev in it:
                    self._put(("event", ev))
                    if self._stop.is_set() or isinstance(ev, Answer):
                        break
                    if time.monotonic() > self._deadline:
                        raise timed_out(self._limit)
            finally:
                it.close()
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which reports it
            self._put(("error", exc))
        else:
            self._put(("end", None))
        finally:
            self._release()

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            while True:
                kind, value = await self._queue.get()
                if kind == "event":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            self._stop.set()  # the client went away or the stream ended: stop at the next token
