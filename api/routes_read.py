"""Reads: retrieval, the graph's views, stats, health, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse, Response

from chronorag.api.auth import JSON_BODY, require
from chronorag.api.deps import Service, get_service
from chronorag.api.errors import ApiError
from chronorag.api.metrics import CONTENT_TYPE
from chronorag.api.models import (
    ErrorOut, HealthOut, PeriodOut, ReadyOut, RetrieveIn, RetrieveOut, StatsOut, TimelineOut,
)

router = APIRouter(prefix="/v1")
probes = APIRouter(tags=["service"])
_E = {"model": ErrorOut}


def retrieve_kwargs(body) -> dict:
    return dict(since=body.since, until=body.until, doc_ids=body.doc_ids, sources=body.sources)


@router.post("/retrieve", response_model=RetrieveOut, dependencies=[require("read"), JSON_BODY], tags=["retrieval"],
             summary="Hybrid retrieval (BM25 + dense + temporal graph, fused) under time, document and source filters")
def retrieve(body: RetrieveIn, service: Service = Depends(get_service)) -> RetrieveOut:
    hits = service.engine.retrieve(body.question, top_k=body.top_k, **retrieve_kwargs(body))
    return RetrieveOut.model_validate(hits.to_dict())


def _graph(service: Service):
    if service.engine.graph is None:
        raise ApiError(404, "the graph is disabled in settings (graph = 'none')", "graph_disabled")
    service.engine.read_state()  # adopt what a writer committed, as every read does
    return service.engine


@router.get("/graph/entities/{name:path}", response_model=TimelineOut, dependencies=[require("read")],
            responses={404: _E}, tags=["graph"], summary="Every fact the temporal graph holds about an entity")
def entity(name: str = Path(description="the entity's name"), service: Service = Depends(get_service)) -> TimelineOut:
    engine = _graph(service)
    try:
        timeline = engine.entity_timeline(name)
    except ValueError as exc:  # an unknown name: the message lists the names it may have meant
        raise ApiError(404, str(exc), "unknown_entity") from None
    return TimelineOut.model_validate(timeline.to_dict())


@router.get("/graph/periods/{label}", response_model=PeriodOut, dependencies=[require("read")],
            responses={400: _E, 404: _E}, tags=["graph"],
            summary="Summary, top facts and children of a period: 2023, 2023-Q3, 2023-08 or 2023-08-11")
def period(label: str, service: Service = Depends(get_service)) -> PeriodOut:
    engine = _graph(service)
    try:
        summary = engine.period_summary(label)
    except ValueError as exc:
        raise ApiError(400, str(exc), "bad_period") from None
    return PeriodOut.model_validate(summary.to_dict())


@router.get("/stats", response_model=StatsOut, dependencies=[require("read")], tags=["service"],
            summary="What the store holds, each index's state and lag, the ingestion queue")
def stats(service: Service = Depends(get_service)) -> StatsOut:
    service.engine.read_state()  # adopt what another process committed: stats of this process's view otherwise
    out = service.engine.stats().to_dict()
    out.pop("data_dir", None)  # the server's file system layout is not the clients' business
    out["queue"] = {"depth": service.queue.depth()}
    return StatsOut.model_validate(out)


@probes.get("/healthz", response_model=HealthOut, summary="The process is up")
def healthz() -> HealthOut:
    return HealthOut()


@probes.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}},
            summary="Ready: models loaded and every index caught up with the store (else 503 and what is missing)")
def readyz(service: Service = Depends(get_service)) -> JSONResponse:
    missing = service.readiness()
    body = ReadyOut(ready=not missing, missing=missing, writer=service.is_writer)
    return JSONResponse(body.model_dump(), status_code=200 if not missing else 503)


@probes.get("/metrics", dependencies=[require("read")], response_class=Response,
            responses={200: {"content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}},
                             "description": "Prometheus text format"}},
            summary="Prometheus metrics")
def metrics(service: Service = Depends(get_service)) -> Response:
    return Response(service.metrics.render(), media_type=CONTENT_TYPE)
