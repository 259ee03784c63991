"""The hashed key file: format checks, hashing, expiry, and the ``keys`` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from healthai.errors import Unauthenticated
from healthai.security import ApiKeyStore, new_key
from healthai.security.cli import main as keys_cli
from healthai.security.keys import parse_key_file


def _file(entries: list) -> bytes:
    return json.dumps({"keys": entries}).encode()


def test_file_holds_no_usable_key(tmp_path: Path) -> None:
    key, entry = new_key("ehr-north", ["score"])
    secret = key[len("hai_") :].partition("_")[2]
    assert secret not in json.dumps(entry)
    assert entry["hash"].startswith("sha256$")
    path = tmp_path / "k.json"
    path.write_bytes(_file([entry]))
    store = ApiKeyStore(path)
    assert store.authenticate(key).client == "ehr-north"
    assert store.authenticate(key).scopes == frozenset({"score"})


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda e: e.update(scopes=["score", "root"]),
            r"keys\[0\]\.scopes has unknown scope\(s\) \['root'\]",
        ),
        (lambda e: e.update(client="bad name!"), r"keys\[0\]\.client='bad name!' must match"),
        (lambda e: e.update(key_id="XYZ"), r"keys\[0\]\.key_id='XYZ' must be 12 lowercase hex"),
        (lambda e: e.update(hash="md5$abc"), r"keys\[0\]\.hash must be 'sha256\$"),
        (
            lambda e: e.update(expires_at="2027-01-01"),
            r"keys\[0\]\.expires_at='2027-01-01' needs a time zone",
        ),
        (lambda e: e.update(expires_at="soon"), r"keys\[0\]\.expires_at='soon' is not an ISO 8601 time"),
    ],
)
def test_malformed_entries_name_the_field(mutate, message: str) -> None:
    _, entry = new_key("ehr-north", ["score"])
    mutate(entry)
    with pytest.raises(ValueError, match=message):
        parse_key_file(_file([entry]))


def test_duplicate_ids_and_bad_json_are_refused() -> None:
    _, entry = new_key("ehr-north", ["score"])
    with pytest.raises(ValueError, match=r"keys\[1\]\.key_id=.* appears twice"):
        parse_key_file(_file([entry, entry]))
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_key_file(b"{")
    with pytest.raises(ValueError, match='"keys" list'):
        parse_key_file(b"[]")


def test_store_refuses_missing_or_bad_file_at_startup(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"api_keys_file .*absent\.json: No such file"):
        ApiKeyStore(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text('{"keys": [1]}')
    with pytest.raises(ValueError, match=r"keys\[0\] must be an object"):
        ApiKeyStore(tmp_path / "bad.json")


def test_store_rejects_wrong_secret_and_unknown_id(tmp_path: Path) -> None:
    key, entry = new_key("ehr-north", ["score"])
    path = tmp_path / "k.json"
    path.write_bytes(_file([entry]))
    store = ApiKeyStore(path)
    for presented in (key + "x", "hai_" + "0" * 12 + "_" + key.rpartition("_")[2], "Bearer", ""):
        with pytest.raises(Unauthenticated, match="API key"):
            store.authenticate(presented)


def test_cli_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys.json"
    assert keys_cli(["keys", "create", "--file", str(path), "--client", "lab-7", "--scope", "ingest"]) == 0
    key = capsys.readouterr().out.strip()
    assert ApiKeyStore(path).authenticate(key).client == "lab-7"
    assert path.stat().st_mode & 0o777 == 0o600
    assert keys_cli(["keys", "list", "--file", str(path)]) == 0
    listing = capsys.readouterr().out
    key_id = key[len("hai_") :].partition("_")[0]
    assert key_id in listing and "lab-7" in listing and key.rpartition("_")[2] not in listing
    assert keys_cli(["keys", "revoke", "--file", str(path), "--key-id", key_id]) == 0
    assert len(ApiKeyStore(path)) == 0
    assert keys_cli(["keys", "revoke", "--file", str(path), "--key-id", key_id]) == 1
