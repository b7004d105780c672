"""Prometheus metrics, one registry per app (tests build many apps in one process).

Request latency per route template and status comes from an ASGI middleware; generation figures
(TTFT, decode tokens/s, KV-cache hits) are observed as answers finish; queue depth, documents per
second and index lag are read when ``/metrics`` is scraped."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chronorag.indexing import backlog
from chronorag.results import Answer

log = logging.getLogger("chronorag.api")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.latency = Histogram("chronorag_http_request_duration_seconds", "HTTP request latency (until the "
                                 "last byte of the response, streams included)", ["method", "route", "status"],
                                 registry=r, buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120))
        self.ttft = Histogram("chronorag_ttft_seconds", "time from the request to the first answer token",
                              registry=r, buckets=(.05, .1, .25, .5, 1, 2, 4, 8, 16, 32, 64))
        self.tokens_per_s = Histogram("chronorag_decode_tokens_per_second", "answer decode speed", registry=r,
                                      buckets=(1, 2, 5, 10, 20, 40, 80, 160, 320, 640))
        self.kv_hits = Counter("chronorag_kv_chunk_hits", "chunks whose KV cache was reused", registry=r)
        self.kv_misses = Counter("chronorag_kv_chunk_misses", "chunks whose KV had to be computed", registry=r)
        self.kv_hit_rate = Gauge("chronorag_kv_cache_hit_rate", "KV-cache chunk hit rate since start", registry=r)
        self._lock = threading.Lock()
        self._kv_counts = (0, 0)
        self.kv_hit_rate.set_function(self._hit_rate)
        self.answers = Counter("chronorag_answers", "answers generated", ["endpoint"], registry=r)
        self.rejected = Counter("chronorag_generation_rejected", "generation requests refused (queue full)",
                                registry=r)
        self.timeouts = Counter("chronorag_generation_timeouts", "generations stopped at the time limit", registry=r)

    def _hit_rate(self) -> float:
        with self._lock:
            hits, misses = self._kv_counts
        return hits / (hits + misses) if hits + misses else 0.0

    def observe_answer(self, answer: Answer, endpoint: str) -> None:
        self.answers.labels(endpoint).inc()
        if answer.text is None:  # nothing retrieved: no generation to time
            return
        self.ttft.observe(max(answer.timings.ttft_ms, 0.0) / 1000)
        gen = answer.timings.generation
        if gen is not None and gen.decode_tokens_per_s > 0:
            self.tokens_per_s.observe(gen.decode_tokens_per_s)
        if answer.cache is not None:
            hits, misses = answer.cache.chunk_hits, answer.cache.chunk_misses
            self.kv_hits.inc(hits)
            self.kv_misses.inc(misses)
            with self._lock:
                self._kv_counts = (self._kv_counts[0] + hits, self._kv_counts[1] + misses)

    def watch_service(self, service: Any) -> None:
        self.registry.register(_ServiceCollector(service))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _seconds(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


class _ServiceCollector:
    """Figures read from the engine and the job queue at scrape time."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def describe(self) -> Iterable:
        return []  # collected lazily: the engine may not be open when the collector is registered

    def collect(self) -> Iterable[GaugeMetricFamily]:
        engine, queue = self.service.engine, self.service.queue
        depth = GaugeMetricFamily("chronorag_ingest_queue_depth", "ingestion jobs queued or running")
        rate = GaugeMetricFamily("chronorag_ingest_documents_per_second",
                                 "documents per second of the newest finished ingestion job")
        lag = GaugeMetricFamily("chronorag_index_lag_changes", "changes each index has not applied yet",
                                labels=["index"])
        try:
            if queue is not None:
                depth.add_metric([], queue.depth())
                rate.add_metric([], _docs_per_second(queue.list(0, 20)))
            if engine is not None:
                newest = engine.store.max_seq()
                for ix in engine.indexes():
                    lag.add_metric([ix.name], backlog(engine.store, ix) if ix.applied_seq < newest else 0)
        except Exception as exc:  # a scrape must not fail because the store is busy or closed
            log.warning("metrics: could not read the service state: %s", exc)
        yield from (depth, rate, lag)


def _docs_per_second(jobs: list) -> float:
    for job in jobs:  # newest first
        start, end = _seconds(getattr(job, "created_at", None)), _seconds(getattr(job, "finished_at", None))
        if job.state == "done" and start is not None and end is not None and end > start:
            return job.done / (end - start)
    return 0.0


class LatencyMiddleware:
    """Times every HTTP request, labelled by the matched route's template (unmatched paths share
    one label, so scanners cannot grow the metric without bound)."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], Metrics | None]) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            metrics = self.metrics()
            if metrics is not None:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                metrics.latency.labels(scope.get("method", ""), route, str(status)).observe(time.perf_counter() - t0)
