"""API keys: the key store (hashed secrets, scopes, revocation) and `chronorag keys`, plus the
`serve` checks that refuse before anything listens."""

from __future__ import annotations

import hashlib
import json

import pytest

from chronorag.cli import main
from chronorag.keys import KeyStore, scope_allows
from chronorag.store import Store


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.delenv("CHRONORAG_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "data"


def test_keys_create_makes_the_store_and_prints_the_key_once(data, capsys):
    code, out, err = _run(capsys, "keys", "create", "--scope", "write", "--name", "ci", "--json", "--data-dir", str(data))
    assert code == 0 and err == ""
    created = json.loads(out)
    assert set(created) >= {"key", "id", "scope"} and created["scope"] == "write"
    assert created["key"].startswith(f"crag_{created['id']}_")
    assert (data / "store.sqlite3").is_file()
    code, out, err = _run(capsys, "keys", "create", "--scope", "read", "--data-dir", str(data))
    assert code == 0 and out.count("\n") == 1 and out.startswith("crag_") and "shown only now" in err
    store = Store(data / "store.sqlite3")
    try:
        assert KeyStore(store).verify(created["key"]).scope == "write"
        assert KeyStore(store).verify(out.strip()).scope == "read"
    finally:
        store.close()


def test_keys_list_never_shows_secrets_or_their_hashes(data, capsys):
    secret = json.loads(_run(capsys, "keys", "create", "--scope", "admin", "--json", "--data-dir", str(data))[1])["key"]
    digest = hashlib.sha256(secret.split("_", 2)[2].encode()).hexdigest()
    for extra in ((), ("--json",)):
        code, out, _ = _run(capsys, "keys", "list", "--data-dir", str(data), *extra)
        assert code == 0 and secret.split("_", 2)[2] not in out and digest not in out
    listed = json.loads(_run(capsys, "keys", "list", "--json", "--data-dir", str(data))[1])
    assert [(k["scope"], k["revoked_at"]) for k in listed] == [("admin", None)]
    assert set(listed[0]) == {"id", "name", "scope", "created_at", "revoked_at"}


def test_keys_revoke_stops_the_key_and_unknown_ids_exit_2(data, capsys):
    created = json.loads(_run(capsys, "keys", "create", "--scope", "read", "--json", "--data-dir", str(data))[1])
    code, out, _ = _run(capsys, "keys", "revoke", created["id"], "--data-dir", str(data))
    assert code == 0 and created["id"] in out
    listed = json.loads(_run(capsys, "keys", "list", "--json", "--data-dir", str(data))[1])
    assert listed[0]["revoked_at"] is not None
    store = Store(data / "store.sqlite3")
    try:
        assert KeyStore(store).verify(created["key"]) is None
    finally:
        store.close()
    code, _, err = _run(capsys, "keys", "revoke", "feedfacecafe", "--data-dir", str(data))
    assert code == 2 and err.count("\n") == 1 and "no API key" in err


def test_keys_list_and_revoke_refuse_a_directory_without_a_store(data, capsys):
    code, _, err = _run(capsys, "keys", "list", "--data-dir", str(data))
    assert code == 2 and "no chronorag store" in err and not data.exists()
    code, _, err = _run(capsys, "keys", "create", "--scope", "owner", "--data-dir", str(data))
    assert code == 2 and err.count("\n") == 1


def test_the_store_keeps_only_a_hash_and_checks_it(tmp_path):
    store = Store(tmp_path / "store.sqlite3")
    try:
        keys = KeyStore(store)
        secret, key = keys.create("read", "reader")
        rows = store.query("SELECT * FROM api_keys")
        assert len(rows) == 1 and secret.split("_", 2)[2] not in repr(rows)
        assert keys.verify(secret) == key and keys.verify(secret + "x") is None
        assert keys.verify(secret.replace(key.key_id, "0" * 12)) is None
        assert keys.verify("") is None and keys.verify("crag__") is None and keys.verify(None) is None
        with pytest.raises(ValueError, match="scope"):
            keys.create("root")
        assert keys.revoke("nope") is None and not keys.revoke(key.key_id).active
        assert keys.verify(secret) is None and not keys.any_active()
    finally:
        store.close()
    assert scope_allows("admin", "write") and scope_allows("write", "read") and not scope_allows("read", "write")


def test_serve_refuses_no_auth_on_a_public_host_and_a_missing_store(data, capsys):
    _run(capsys, "keys", "create", "--scope", "read", "--data-dir", str(data))
    for host in ("0.0.0.0", "192.168.1.10", "example.org", "::"):
        code, out, err = _run(capsys, "serve", "--no-auth", "--host", host, "--data-dir", str(data))
        assert code == 2 and out == "" and err.count("\n") == 1 and "--no-auth" in err
    code, _, err = _run(capsys, "serve", "--data-dir", str(data.parent / "elsewhere"))
    assert code == 2 and "no chronorag store" in err
