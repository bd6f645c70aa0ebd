"""The production stack's secrets (docker-compose.yml `secrets:`), made once in one folder.

    python -m tritonkit.serve.secrets --out .secrets      # make production-secrets

writes, where they are missing (an existing file is kept: delete one to rotate it):

- `triton-admin-key`: the key Triton's restricted APIs ask for (deploy/triton/entrypoint.sh)
  and the sidecar sends to reload a model;
- `gateway-keys.json`: the gateway's key store, the hashes of one caller key and one admin
  key, printed once here and kept nowhere else;
- `tls/cert.pem`, `tls/key.pem`: a self-signed pair for the gateway's HTTPS (replace both with
  your own certificate and key, same names);
- `grafana-admin-password`.

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
from pathlib import Path

from tritonkit.errors import TritonKitError
from tritonkit.gateway.auth import add_key
from tritonkit.gateway.tls import make_self_signed
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


def make_production_secrets(folder: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
                            ) -> tuple[list[Path], dict[str, str]]:
    """Write the missing secrets; returns (files written, keys to show once by name)."""
    _private_folder(folder)
    _private_folder(folder / "tls")
    written, shown = [], {}
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
