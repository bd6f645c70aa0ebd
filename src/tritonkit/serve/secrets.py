"""The production stack's secrets (docker-compose.yml `secrets:`), made once in one folder.

    python -m tritonkit.serve.secrets --out .secrets      # make production-secrets

writes, where they are missing (an existing file is kept: delete one to rotate it):

- `triton-admin-key`: the key Triton's restricted APIs ask for (deploy/triton/entrypoint.sh)
  and the sidecar sends to reload a model;
- `gateway-keys.json`: the gateway's key store, the hashes of one caller key and one admin
  key, printed once here and kept nowhere else;
- `tls/cert.pem`, `tls/key.pem`: a self-signed pair for the gateway's HTTPS (replace both with
  your own certificate and key, same names);
- `grafana-admin-password`;
- `alertmanager/<receiver>-url`: each Alertmanager receiver's webhook URL (Alertmanager reads
  them with `url_file`), from `TRITONKIT_ALERT_<RECEIVER>_URL` when set (it replaces the file),
  else the sidecar's inbox `http://monitor:9108/alerts/inbox/<receiver>`, so a fresh stack
  delivers somewhere you can look (`tritonkit.monitor.receivers`).

Compose bind-mounts each file into the containers, whose users (uid 1000 in Triton's image,
10001 in ours) are not the host user who made them: each file is mode 0444 and the folder 0700,
so the containers can read their secret while no other user of the host can reach the folder.
"""

from __future__ import annotations

import argparse
import os
import secrets as random
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from tritonkit.errors import TritonKitError
from tritonkit.gateway.auth import add_key
from tritonkit.gateway.tls import make_self_signed
from tritonkit.monitor.receivers import (
    PRODUCTION_INBOX,
    env_name,
    load_config,
    receiver_urls,
    receivers,
    secret_name,
)
from tritonkit.paths import PROJECT_ROOT

SECRETS_DIR = PROJECT_ROOT / ".secrets"
#: compose secret name -> its file in the folder
FILES = {
    "triton_admin_key": "triton-admin-key",
    "gateway_keys": "gateway-keys.json",
    "gateway_tls_cert": "tls/cert.pem",
    "gateway_tls_key": "tls/key.pem",
    "grafana_admin_password": "grafana-admin-password",
}
#: an Alertmanager receiver's URL file in the folder (its compose secret: `secret_name`)
ALERT_URL_FILE = "alertmanager/{receiver}-url"
FILE_MODE = 0o444
FOLDER_MODE = 0o700


def _private_folder(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, FOLDER_MODE)


def _write(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text)
    os.chmod(partial, FILE_MODE)
    os.replace(partial, path)


def alert_url_files(folder: Path) -> dict[str, Path]:
    """Each Alertmanager receiver's URL file in `folder`, by compose secret name."""
    return {secret_name(name): folder / ALERT_URL_FILE.format(receiver=name)
            for name in receivers(load_config())}


def secret_files(folder: Path) -> dict[str, Path]:
    """Every file `make_production_secrets` writes in `folder`, by compose secret name."""
    return {**{secret: folder / name for secret, name in FILES.items()},
            **alert_url_files(folder)}


def _write_alert_urls(folder: Path, environ: Mapping[str, str]) -> list[Path]:
    """A receiver's file from its variable when set (replacing the file), else the inbox
    where the file is missing."""
    _private_folder(folder / "alertmanager")
    names = receivers(load_config())
    urls = receiver_urls(names, PRODUCTION_INBOX, environ)
    written = []
    for name in names:
        path = folder / ALERT_URL_FILE.format(receiver=name)
        given = environ.get(env_name(name), "").strip()
        current = path.read_text().strip() if path.exists() else None
        if current is None or (given and current != given):
            _write(path, urls[name] + "\n")
            written.append(path)
    return written


def make_production_secrets(folder: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
                            environ: Mapping[str, str] | None = None
                            ) -> tuple[list[Path], dict[str, str]]:
    """Write the missing secrets; returns (files written, keys to show once by name)."""
    _private_folder(folder)
    _private_folder(folder / "tls")
    written, shown = _write_alert_urls(folder, os.environ if environ is None else environ), {}
    path = folder / FILES["triton_admin_key"]
    if not path.exists():
        _write(path, random.token_urlsafe(32) + "\n")
        written.append(path)
    path = folder / FILES["grafana_admin_password"]
    if not path.exists():
        _write(path, random.token_urlsafe(24) + "\n")
        written.append(path)
    path = folder / FILES["gateway_keys"]
    if not path.exists():
        partial = path.with_name(f".new-{path.name}")
        partial.unlink(missing_ok=True)
        shown["caller"] = add_key(partial, name="caller", mode=FILE_MODE)
        shown["admin"] = add_key(partial, name="admin", role="admin", mode=FILE_MODE)
        os.replace(partial, path)
        written.append(path)
    cert, key = folder / FILES["gateway_tls_cert"], folder / FILES["gateway_tls_key"]
    if not (cert.exists() and key.exists()):
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            made_cert, made_key = make_self_signed(Path(scratch), hosts, overwrite=True)
            for made, final in ((made_cert, cert), (made_key, key)):
                os.chmod(made, FILE_MODE)
                shutil.move(made, final)
        written += [cert, key]
    return written, shown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SECRETS_DIR,
                        help="the folder (default .secrets/, which docker-compose.yml reads "
                             "unless SECRETS_DIR says otherwise)")
    parser.add_argument("--host", action="append", dest="hosts",
                        help="a name the self-signed certificate is for (repeat; default "
                             "localhost and 127.0.0.1)")
    args = parser.parse_args(argv)
    try:
        written, shown = make_production_secrets(args.out, tuple(args.hosts or
                                                                 ("localhost", "127.0.0.1")))
    except (TritonKitError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    if not written:
        print(f"every secret exists in {args.out} (delete a file to make it again)")
    for role, key in shown.items():
        print(f"gateway {role} key (shown once, only its hash is kept): {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
