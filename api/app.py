"""The FastAPI application: ``create_app(settings)`` builds it; ``chronorag serve`` runs it.

Its lifespan opens the engine (or takes the one given), opens the job queue and the key store,
starts the ingestion worker (unless another process is the writer) and a warm-up thread (the
graph, the embedder and the answer model load while ``/healthz`` already answers; ``/readyz``
says when they are in), and closes them on shutdown. One engine serves every request thread.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.concurrency import run_in_threadpool

import chronorag
from chronorag.api import chat, routes_documents, routes_query, routes_read
from chronorag.api.deps import Service
from chronorag.api.errors import BodyLimitMiddleware, install_handlers
from chronorag.api.metrics import LatencyMiddleware
from chronorag.api.models import DocumentsIn, ErrorOut
from chronorag.config import Settings
from chronorag.engine import ChronoRAG

DESCRIPTION = """RAG over document collections that change over time.

Authenticate with `Authorization: Bearer KEY` or `X-API-Key: KEY` (keys from
`chronorag keys create --scope read|write|admin`). Errors are `{"error": {"message", "type"}}`."""
COMMON_ERRORS = {code: {"model": ErrorOut} for code in (400, 401, 403, 413, 415, 422, 503)}


def create_app(settings: Settings, auth: bool = True, *, engine: ChronoRAG | None = None, worker: bool = True,
               warm_up: bool = True, jobs: Any = None) -> FastAPI:
    """The service over ``settings.data_dir``.

    ``auth`` off grants every scope (for loopback use only: ``chronorag serve`` refuses it with
    another host). ``engine``: an open engine to serve (the caller closes it; else the lifespan
    opens one on an existing store). ``worker`` off leaves queued jobs to another process.
    ``warm_up`` off skips loading models ahead of the first request. ``jobs``: the module giving
    ``JobQueue`` and ``IngestWorker`` (default :mod:`chronorag.jobs`)."""
    settings = settings.validate()
    service = Service(settings, auth, engine, worker, warm_up, jobs)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(service.open)
        try:
            yield
        finally:
            await run_in_threadpool(service.close)

    app = FastAPI(title="chronorag", version=chronorag.__version__, description=DESCRIPTION, lifespan=lifespan,
                  responses=COMMON_ERRORS)
    app.state.service = service
    install_handlers(app)
    # added last runs first: latency times everything, the body cap comes before any parsing
    app.add_middleware(BodyLimitMiddleware, max_bytes=int(settings.api_max_body_mb * 1024 * 1024))
    app.add_middleware(LatencyMiddleware, metrics=lambda: service.metrics)
    for router in (routes_documents.router, routes_read.router, routes_query.router, chat.router):
        app.include_router(router)
    app.include_router(routes_read.probes)

    def openapi() -> dict[str, Any]:
        """FastAPI's schema plus the two bodies ``POST /v1/documents`` reads by hand."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            comps = schema.setdefault("components", {}).setdefault("schemas", {})
            documents = DocumentsIn.model_json_schema(ref_template="#/components/schemas/{model}")
            comps.update(documents.pop("$defs", {}))
            comps["DocumentsIn"] = documents
            comps["DocumentUpload"] = routes_documents.UPLOAD_SCHEMA
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app
