"""Property-based checks of the served OpenAPI schema with schemathesis (in-process ASGI), one test
per operation: on generated input (fitting the schema, and not fitting it) no operation answers
5xx, and every response conforms to its documented status, content type, headers and schema.

Hypothesis drives each operation's strategy directly (``as_strategy``): schemathesis's lazy pytest
loader does not run under this pytest."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance, response_headers_conformance, response_schema_conformance, status_code_conformance,
)
from test_api_support import DOCS, build_api

from chronorag.api.app import create_app
from chronorag.config import Settings
from chronorag.types import Document

MAX_EXAMPLES = 25  # per operation and mode: the whole schema in well under a minute
# what the service promises: no 5xx, and responses as documented. Not "every schema-valid input is
# accepted": a string field may still hold a bad date (400), which no JSON schema can say.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


def _operations() -> list:
    """(method, path, mode) of every operation; the negative mode only where there is input to break
    (any string is a valid document id, entity name or period label: nothing to break there)."""
    # the schema does not depend on the data: an app that never starts lists the operations
    paths = create_app(Settings(data_dir="unused", embedder="none")).openapi()["paths"]
    out = []
    for path, ops in paths.items():
        for method, op in ops.items():
            out.append((method.upper(), path, GenerationMode.POSITIVE))
            breakable = [p for p in op.get("parameters", []) if p["in"] != "header" and p["schema"].get("type") != "string"]
            if op.get("requestBody") or breakable:
                out.append((method.upper(), path, GenerationMode.NEGATIVE))
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    # small limits so generated bodies also meet the 413s; generation is the fast fake
    app, api = build_api(tmp_path_factory.mktemp("schema"), api_max_documents=20, api_max_body_mb=0.05,
                         api_generation_timeout_s=20)
    api.engine.insert([Document(d["id"], d["text"], source=d.get("source", "")) for d in DOCS])
    yield schemathesis.openapi.from_asgi("/openapi.json", app), api.keys["admin"]
    api.engine.close()


@pytest.mark.parametrize("method,path,mode", _operations())
def test_generated_requests_never_get_5xx_and_responses_match_the_schema(served, method, path, mode):
    schema, key = served
    operation = schema[path][method]
    strategy = operation.as_strategy(mode, headers={"Authorization": f"Bearer {key}", "X-API-Key": key})

    @given(case=strategy)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate(checks=CHECKS)

    check()
