"""A self-signed certificate and key for serving the gateway over HTTPS in development.

`make certs` writes `.cache/certs/{cert,key}.pem` for localhost and 127.0.0.1 with the openssl
command-line tool; production brings its own pair (`--tls-cert`, `--tls-key`)::

    cert, key = make_self_signed(Path(".cache/certs"))
    ssl.create_default_context(cafile=cert)          # how a client trusts it
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tritonkit.errors import TritonKitError


def make_self_signed(folder: Path, hosts: Sequence[str] = ("localhost", "127.0.0.1"),
                     days: int = 365, overwrite: bool = False) -> tuple[Path, Path]:
    """Write `cert.pem` and `key.pem` (P-256) into `folder`; keep an existing pair unless told.

    Returns:
        (certificate path, key path).

    Raises:
        TritonKitError: openssl is missing or failed.
    """
    cert, key = folder / "cert.pem", folder / "key.pem"
    if cert.exists() and key.exists() and not overwrite:
        return cert, key
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TritonKitError("openssl not found: apt-get install openssl")
    folder.mkdir(parents=True, exist_ok=True)
    names = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}"
                     for h in hosts)
    cmd = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
           "-nodes", "-days", str(days), "-subj", f"/CN={hosts[0]}",
           "-addext", f"subjectAltName={names}", "-keyout", str(key), "-out", str(cert)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TritonKitError(f"openssl could not make a certificate: {done.stderr.strip()}")
    key.chmod(0o600)
    return cert, key
