"""API keys for ``chronorag serve``, kept in the store's ``api_keys`` table.

A key is ``crag_<id>_<secret>``: the id finds the row, the secret is checked against the SHA-256
stored there (never the secret itself), with a constant-time comparison. The full key is shown
once, when it is created. Scopes nest: read < write < admin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from chronorag.store import Store

SCOPES = ("read", "write", "admin")
PREFIX = "crag"
MAX_NAME_CHARS = 200
SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id         TEXT PRIMARY KEY,
    name           TEXT NOT NULL DEFAULT '',
    scope          TEXT NOT NULL,
    secret_sha256  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    revoked_at     TEXT
);
"""
_DUMMY_DIGEST = hashlib.sha256(b"no such key").hexdigest()


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def scope_allows(held: str, needed: str) -> bool:
    return SCOPES.index(held) >= SCOPES.index(needed)


@dataclass(frozen=True)
class ApiKey:
    """A key as listed: everything but the secret."""

    key_id: str
    name: str
    scope: str
    created_at: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, needed: str) -> bool:
        return self.active and scope_allows(self.scope, needed)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.key_id, "name": self.name, "scope": self.scope, "created_at": self.created_at,
                "revoked_at": self.revoked_at}


class KeyStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        store.executescript(SCHEMA)

    def create(self, scope: str, name: str = "") -> tuple[str, ApiKey]:
        """A new key: (the full key, to show once; its listing)."""
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
            raise ValueError(f"name must be a string of at most {MAX_NAME_CHARS} characters")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self.store.transaction() as cur:
            cur.execute("INSERT INTO api_keys(key_id, name, scope, secret_sha256, created_at) VALUES (?,?,?,?,?)",
                        (key_id, name, scope, _digest(secret), created))
        return f"{PREFIX}_{key_id}_{secret}", ApiKey(key_id, name, scope, created)

    def list(self) -> list[ApiKey]:
        rows = self.store.query("SELECT key_id, name, scope, created_at, revoked_at FROM api_keys"
                                " ORDER BY created_at, key_id")
        return [ApiKey(*r) for r in rows]

    def any_active(self) -> bool:
        return bool(self.store.query("SELECT 1 FROM api_keys WHERE revoked_at IS NULL LIMIT 1"))

    def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke a key; returns it (None when no key has that id). Revoking twice keeps the first time."""
        revoked = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self.store.transaction() as cur:
            cur.execute("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE key_id = ?", (revoked, key_id))
            row = cur.execute("SELECT key_id, name, scope, created_at, revoked_at FROM api_keys WHERE key_id = ?",
                              (key_id,)).fetchone()
        return ApiKey(*row) if row else None

    def verify(self, key: str) -> ApiKey | None:
        """The active key ``key`` is, or None (malformed, unknown, wrong secret or revoked)."""
        parts = key.split("_", 2) if isinstance(key, str) else []
        if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
            return None
        rows = self.store.query("SELECT key_id, name, scope, created_at, revoked_at, secret_sha256 FROM api_keys"
                                " WHERE key_id = ?", (parts[1],))
        stored = rows[0][5] if rows else _DUMMY_DIGEST  # compare anyway: same work for unknown ids
        match = hmac.compare_digest(_digest(parts[2]), stored)
        if not rows or not match or rows[0][4] is not None:
            return None
        return ApiKey(*rows[0][:5])
