"""``chronorag serve`` (the REST API under uvicorn) and ``chronorag keys`` (its API keys)."""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys

from chronorag.cli_args import UsageError
from chronorag.config import load_settings
from chronorag.store import Store


def _settings(args: argparse.Namespace):
    return load_settings(config_file=getattr(args, "config", None), data_dir=getattr(args, "data_dir", None))


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def cmd_serve(args: argparse.Namespace) -> int:
    if args.no_auth and not is_loopback(args.host):
        raise UsageError(f"--no-auth serves without API keys: refused with --host {args.host} (only a loopback "
                         "address such as 127.0.0.1 may go without keys)")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535, got {args.port}")
    settings = _settings(args)
    if not settings.store_path.is_file():
        raise UsageError(f"no chronorag store in {settings.data_dir} (create one with `chronorag keys create` "
                         "or `chronorag ingest`, or pass --data-dir)")
    import uvicorn

    from chronorag.api.app import create_app

    Store(settings.store_path, create=False).close()  # refuse a file that is not a store, before binding
    app = create_app(settings, auth=not args.no_auth, worker=not args.no_worker)
    keyless = " without API keys" if args.no_auth else ""
    print(f"chronorag: serving {settings.data_dir} on http://{args.host}:{args.port}{keyless}", file=sys.stderr)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=10,
                            access_log=False)
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1


def _key_store(args: argparse.Namespace, create: bool):
    from chronorag.keys import KeyStore

    settings = _settings(args)
    if not create and not settings.store_path.is_file():
        raise UsageError(f"no chronorag store in {settings.data_dir} (pass --data-dir)")
    store = Store(settings.store_path, create=create)
    return store, KeyStore(store)


def cmd_keys(args: argparse.Namespace) -> int:
    command = getattr(args, "keys_command", None)
    if command is None:
        raise UsageError("keys needs a subcommand: create --scope read|write|admin, list or revoke ID")
    store, keys = _key_store(args, create=command == "create")
    try:
        if command == "create":
            secret, key = keys.create(args.scope, args.name)
            if args.json:
                print(json.dumps({"key": secret, "id": key.key_id, "scope": key.scope, "name": key.name}))
            else:
                print(secret)
                named = f" '{key.name}'" if key.name else ""
                print(f"created {key.scope} key {key.key_id}{named}; it is shown only now: store it safely",
                      file=sys.stderr)
            return 0
        if command == "list":
            listed = keys.list()
            if args.json:
                print(json.dumps([k.to_dict() for k in listed], ensure_ascii=False))
            elif not listed:
                print("no API keys (create one with `chronorag keys create --scope read|write|admin`)")
            else:
                for k in listed:
                    state = f"revoked {k.revoked_at}" if k.revoked_at else "active"
                    print(f"{k.key_id}  {k.scope:<5}  {state:<32}  created {k.created_at}  {k.name}".rstrip())
            return 0
        key = keys.revoke(args.key_id)
        if key is None:
            raise UsageError(f"no API key with id {args.key_id!r} (see `chronorag keys list`)")
        if args.json:
            print(json.dumps(key.to_dict(), ensure_ascii=False))
        else:
            print(f"revoked key {key.key_id} ({key.scope})")
        return 0
    finally:
        store.close()
