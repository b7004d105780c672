"""API-key scopes as FastAPI dependencies: ``Depends(require("write"))`` on a route.

The key comes as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; it is checked against the
hashed keys in the store (:mod:`chronorag.keys`). With auth off (``serve --no-auth``, loopback
only) every scope is granted.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from chronorag.api.errors import ApiError
from chronorag.keys import ApiKey

bearer = HTTPBearer(auto_error=False, description="an API key from `chronorag keys create`")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the same key, another header")


def _scope_check(needed: str) -> Callable[..., ApiKey | None]:
    # sync: the key lookup reads the store, which must not hold up the event loop
    def check(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer),
              header_key: str | None = Security(api_key_header)) -> ApiKey | None:
        service = request.app.state.service
        if not service.auth:
            return None
        given = header_key or (credentials.credentials if credentials is not None else None)
        if not given:
            if request.headers.get("authorization"):
                raise ApiError(401, "the Authorization header must be 'Bearer KEY'", headers={"WWW-Authenticate": "Bearer"})
            raise ApiError(401, "an API key is required (Authorization: Bearer KEY or X-API-Key: KEY)",
                           headers={"WWW-Authenticate": "Bearer"})
        key = service.keys.verify(given)
        if key is None:
            raise ApiError(401, "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"})
        if not key.allows(needed):
            raise ApiError(403, f"this key has scope '{key.scope}'; this needs '{needed}'")
        return key

    check.__name__ = f"require_{needed}"
    return check


_CHECKS = {scope: _scope_check(scope) for scope in ("read", "write", "admin")}


def _json_only(request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        raise ApiError(415, f"send the body as application/json, not {kind or 'without a Content-Type'}",
                       "unsupported_media_type")


JSON_BODY = Depends(_json_only)  # after the scope check: a stranger learns nothing from a 415


def require(scope: str):
    """A dependency that lets a request through with a key of ``scope`` or above."""
    return Depends(_CHECKS[scope])
