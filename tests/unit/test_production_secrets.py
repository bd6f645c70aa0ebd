"""`make production-secrets` (tritonkit.serve.secrets): every secret compose mounts, made once,
each file 0444 in a 0700 folder, keys shown once and kept as hashes, nothing development."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tritonkit.gateway.auth import KeyStore
from tritonkit.gateway.settings import GatewaySettings, production_problems
from tritonkit.paths import PROJECT_ROOT
from tritonkit.serve.secrets import FILES, main, secret_files


def test_production_secrets_writes_every_compose_secret_once_and_keeps_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "secrets"
    assert main(["--out", str(folder)]) == 0
    first = capsys.readouterr().out
    keys = dict(re.findall(r"gateway (caller|admin) key \(shown once[^)]*\): (\S+)", first))
    assert set(keys) == {"caller", "admin"}
    assert folder.stat().st_mode & 0o777 == 0o700
    files = secret_files(folder)
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    assert set(files) == set(compose["secrets"])  # every secret compose mounts, written
    contents = {}
    for secret, path in files.items():
        assert path.stat().st_mode & 0o777 == 0o444, secret
        assert compose["secrets"][secret]["file"] == "${SECRETS_DIR:-./.secrets}/" + str(
            path.relative_to(folder))
        contents[secret] = path.read_bytes()
    admin_key = (folder / FILES["triton_admin_key"]).read_text().strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{32,}", admin_key)  # what entrypoint.sh accepts
    store = KeyStore.load(folder / FILES["gateway_keys"])
    assert store.authenticate(keys["caller"]).role == "caller"  # type: ignore[union-attr]
    assert store.authenticate(keys["admin"]).role == "admin"  # type: ignore[union-attr]
    data = json.loads((folder / FILES["gateway_keys"]).read_text())
    assert all(keys["caller"] not in json.dumps(item) for item in data["keys"])
    assert not any(item.get("development") for item in data["keys"])
    settings = GatewaySettings(keys_file=folder / FILES["gateway_keys"],
                               tls_cert=folder / FILES["gateway_tls_cert"],
                               tls_key=folder / FILES["gateway_tls_key"])
    assert production_problems(settings) == []
    # a second run keeps everything and shows no key
    assert main(["--out", str(folder)]) == 0
    assert "every secret exists" in capsys.readouterr().out
    assert {secret: path.read_bytes() for secret, path in files.items()} == contents
