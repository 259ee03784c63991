"""``healthai keys``: create, list and revoke API keys in the hashed key file.

``create`` prints the new key once (stdout) and stores only its salted hash; the running server
picks the change up on its next call. Register in ``healthai.cli.SUBCOMMAND_MODULES`` as
``healthai.security.cli``; also runs standalone: ``python -m healthai.security.cli keys ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from healthai.security.keys import new_key, parse_key_file
from healthai.security.settings import SCOPES


def _load(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    raw = path.read_bytes()
    parse_key_file(raw)  # refuse to edit a file the server would reject
    return list(json.loads(raw)["keys"])


def _save(path: Path, entries: list[dict[str, Any]]) -> None:
    """Atomic replace (the server never sees a half-written file), owner-only permissions."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"keys": entries}, out, indent=2)
        out.write("\n")
    os.replace(tmp, path)


def _create(args: argparse.Namespace) -> int:
    expires = datetime.fromisoformat(args.expires_at) if args.expires_at else None
    if expires is not None and expires.tzinfo is None:
        print(f"--expires-at {args.expires_at!r} needs a time zone (e.g. 'Z')", file=sys.stderr)
        return 2
    entries = _load(args.file)
    key, entry = new_key(args.client, sorted(set(args.scope)), expires)
    _save(args.file, [*entries, entry])
    print(key)
    print(f"stored key_id {entry['key_id']} for client {args.client!r} in {args.file}", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    for entry in _load(args.file):
        expiry = entry.get("expires_at") or "never"
        print(f"{entry['key_id']}  {entry['client']:<24} {','.join(entry['scopes']):<32} expires {expiry}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    entries = _load(args.file)
    kept = [e for e in entries if e["key_id"] != args.key_id]
    if len(kept) == len(entries):
        print(f"key_id {args.key_id!r} not found in {args.file}", file=sys.stderr)
        return 1
    _save(args.file, kept)
    return 0


def _refusing(action: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a ``keys`` action; a refusal (a client name or time the key file would not hold, a key file
    the server would reject, one it cannot read or write) is one line on stderr and exit 2."""
    def run(args: argparse.Namespace) -> int:
        try:
            return action(args)
        except ValueError as e:
            print(f"healthai keys {args.keys_command}: {e}", file=sys.stderr)
        except OSError as e:
            print(f"healthai keys {args.keys_command}: {str(args.file)!r}: {e.strerror}", file=sys.stderr)
        return 2

    return run


def register(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="manage API keys (hashed key file)")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="create a key; prints it once")
    create.add_argument("--file", type=Path, required=True, help="the api_keys_file")
    create.add_argument("--client", required=True, help="calling system's name (appears in audit lines)")
    create.add_argument("--scope", action="append", choices=SCOPES, required=True, help="repeat per scope")
    create.add_argument("--expires-at", help="ISO 8601 time with zone, e.g. 2027-01-01T00:00:00Z")
    create.set_defaults(func=_refusing(_create))
    listing = actions.add_parser("list", help="list key ids, clients, scopes (never secrets)")
    listing.add_argument("--file", type=Path, required=True)
    listing.set_defaults(func=_refusing(_list))
    revoke = actions.add_parser("revoke", help="remove a key by id")
    revoke.add_argument("--file", type=Path, required=True)
    revoke.add_argument("--key-id", required=True)
    revoke.set_defaults(func=_refusing(_revoke))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="healthai")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
