"""The REST service (FastAPI, ``/v1``): ``create_app(settings)``; ``chronorag serve`` runs it.

Modules: app (factory, lifespan, OpenAPI), deps (shared state), models (request/response schemas),
routes_documents (documents, jobs), routes_read (retrieve, graph, stats, probes, metrics),
routes_query (answers), chat (OpenAI-compatible), generation (queue bound, budget, time limit,
streams), auth (key scopes), errors (error bodies, body cap), metrics (Prometheus), uploads.
"""


def create_app(*args, **kwargs):
    """See :func:`chronorag.api.app.create_app` (imported on use: FastAPI is not needed elsewhere)."""
    from chronorag.api.app import create_app as build

    return build(*args, **kwargs)


__all__ = ["create_app"]
