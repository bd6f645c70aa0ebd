"""Runtime settings of the gateway: one frozen dataclass, each field with its flag's help.

`tritonkit.gateway.cli` fills it from flags whose defaults come from `TRITONKIT_GATEWAY_*`
environment variables; tests build it directly::

    settings = GatewaySettings(triton_url="127.0.0.1:8001", protocol="grpc", port=0)
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Literal

from limits import parse

from tritonkit.errors import TritonKitError
from tritonkit.paths import CACHE

GATEWAY_DIR = CACHE / "gateway"
#: The key store (hashes only) that `make up` and `make api-key` create on first use.
DEFAULT_KEYS_FILE = GATEWAY_DIR / "keys.json"
#: Where `make certs` writes its self-signed pair.
CERTS_DIR = CACHE / "certs"
#: The plain development keys `ensure_dev_keys` keeps beside the store (caller, admin).
DEV_KEY_FILES = ("dev-api-key", "dev-admin-key")


class GatewayConfigError(TritonKitError):
    """The gateway's settings cannot serve: the message says what to change."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class GatewaySettings:
    """How the gateway runs; `help` of each field is the CLI flag's help."""

    #: host:port of Triton (gRPC port for grpc, HTTP port for http); several replicas
    #: comma-separated ("10.0.0.1:8000,10.0.0.2:8000"): least outstanding requests first
    triton_url: str = "127.0.0.1:8001"
    #: protocol to Triton: grpc (one grpc.aio channel) or http (binary tensors on keep-alive
    #: connections: less of the gateway's CPU per call, see README, the public API)
    protocol: Literal["grpc", "http"] = "grpc"
    #: address the gateway binds
    host: str = "127.0.0.1"
    #: port the gateway listens on (0: any free port, reported at start)
    port: int = 8080
    #: TLS certificate (PEM); with tls_key, the gateway serves HTTPS only
    tls_cert: Path | None = None
    #: TLS private key (PEM)
    tls_key: Path | None = None
    #: the key store: JSON with the SHA-256 of each API key, never the keys (required outside
    #: dev mode; in dev mode the development store, .cache/gateway/keys.json)
    keys_file: Path | None = None
    #: development mode (make up, make gateway): the development keys, plain HTTP and the
    #: interactive docs are allowed. Outside it the gateway refuses to start on development
    #: keys, an empty or unreadable key store, or plain HTTP without plain_http
    dev_mode: bool = False
    #: serve plain HTTP outside dev mode: only behind a proxy that terminates TLS
    plain_http: bool = False
    #: serve /docs and /openapi.json (the API's interactive documentation)
    docs: bool = True
    #: serve /metrics on this port (plain HTTP, for Prometheus on an internal network) and not
    #: on the public one; none: /metrics on the public port
    metrics_port: int | None = None
    #: longest a request's headers may take to arrive, seconds (408 beyond)
    header_timeout_s: float = 10.0
    #: longest a request's body may take to arrive once its headers did, seconds (408 beyond)
    body_timeout_s: float = 10.0
    #: idle time after which a kept-alive connection is closed, seconds
    keep_alive_timeout_s: float = 5.0
    #: connections open at once; a request beyond gets 503 with Retry-After
    max_connections: int = 1024
    #: customers per key, in the `limits` notation ("500/second", "10000/minute"): a call to
    #: /predict costs 1, a batch of n customers n; a batch above it is never served (keep it at
    #: least max_batch)
    rate_limit_per_key: str = "500/second"
    #: customers for all keys together (a request it refuses costs its key nothing)
    rate_limit_global: str = "5000/second"
    #: requests without a valid key (401s, /healthz, /readyz, /metrics, /docs) per client
    #: address; an address over it gets 429 before any key it sends is checked
    rate_limit_unauthenticated: str = "20/second"
    #: where rate-limit counters live: memory:// (per gateway process) or
    #: async+redis://host:6379 (shared by every gateway)
    rate_limit_storage: str = "memory://"
    #: when the rate-limit store cannot be reached: serve anyway (open) or answer 503 (closed)
    rate_limit_fail_open: bool = True
    #: Triton's HTTP host:port for the admin reload (/admin/models/<name>/load) and version
    #: loads, which use the repository API, one per replica in triton_url's order; default:
    #: triton_url when protocol is http
    triton_admin_url: str | None = None
    #: a file holding the key of Triton's restricted APIs (what the admin reload sends);
    #: none: the reload goes keyless, which a restricted Triton refuses (403)
    triton_admin_key_file: Path | None = None
    #: deadline of one call to Triton, seconds
    triton_timeout_s: float = 1.0
    #: coalesce concurrent /predict calls into one Triton request
    coalesce: bool = True
    #: longest a request waits for others to join its Triton request, seconds
    coalesce_max_wait_s: float = 0.002
    #: most customers in one coalesced Triton request (at most the model's max_batch_size)
    coalesce_max_rows: int = 64
    #: Triton requests in flight at once from the coalescer; more requests wait and merge
    coalesce_max_in_flight: int = 2
    #: most customers the coalescer holds (queued, or sent and not yet answered); a /predict
    #: beyond gets 503 with Retry-After (8 full coalesced requests by default)
    coalesce_max_pending_rows: int = 512
    #: most customers in one /predict/batch request (the model's max_batch_size)
    max_batch: int = 256
    #: largest request body accepted, bytes (413 beyond, checked before reading it)
    max_body_bytes: int = 256 * 1024
    #: consecutive calls a replica cannot take (or 500s another replica then answers, or
    #: health checks finding the model not ready) that take it out of rotation
    replica_eject_failures: int = 2
    #: seconds between health checks of each replica (readiness; an ejected one also gets a
    #: real inference before it comes back)
    replica_health_interval_s: float = 1.0
    #: a JSON file with the rollout's weights ({"weights": {"1": 95, "2": 5}, "stable": "1"}),
    #: read at start and whenever it changes (a ConfigMap in Kubernetes: every gateway routes
    #: alike); none: weights come from PUT /admin/rollout only
    rollout_file: Path | None = None
    #: consecutive failures of the Triton path that open the breaker
    breaker_failures: int = 5
    #: how long an open breaker waits before one probe goes to Triton, seconds
    breaker_reset_s: float = 2.0
    #: answer with the fallback model while Triton cannot (else 503)
    fallback: bool = True
    #: how long a /readyz answer (a real inference) is reused, seconds
    ready_cache_s: float = 1.5
    #: the churn model version whose artefacts (schema, fallback) the gateway loads
    model_version: int = 1

    def __post_init__(self) -> None:
        problems = []
        if (self.tls_cert is None) != (self.tls_key is None):
            problems.append("tls_cert and tls_key go together: give both or neither")
        if self.protocol not in ("grpc", "http"):
            problems.append(f"protocol must be grpc or http, not {self.protocol!r}")
        if not 1 <= self.coalesce_max_rows <= self.max_batch:
            problems.append(f"coalesce_max_rows must be between 1 and max_batch "
                            f"({self.max_batch}), not {self.coalesce_max_rows}")
        for name in ("triton_timeout_s", "breaker_reset_s", "header_timeout_s",
                     "body_timeout_s", "keep_alive_timeout_s", "replica_health_interval_s"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0")
        if self.max_connections < 1:
            problems.append("max_connections must be at least 1")
        if self.replica_eject_failures < 1:
            problems.append("replica_eject_failures must be at least 1")
        if not [u for u in self.triton_url.split(",") if u.strip()]:
            problems.append("triton_url must name at least one host:port")
        if self.coalesce_max_wait_s < 0 or self.coalesce_max_in_flight < 1:
            problems.append("coalesce_max_wait_s must be >= 0 and coalesce_max_in_flight >= 1")
        if self.coalesce_max_pending_rows < 1:
            problems.append("coalesce_max_pending_rows must be at least 1")
        for name in ("rate_limit_per_key", "rate_limit_global", "rate_limit_unauthenticated"):
            try:
                parse(getattr(self, name))
            except ValueError:
                problems.append(f"{name} must be a rate such as 500/second or 10000/minute, "
                                f"not {getattr(self, name)!r}")
        if self.max_body_bytes < 1024:
            problems.append("max_body_bytes must be at least 1024")
        if problems:
            raise ValueError("invalid gateway settings: " + "; ".join(problems))

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert is not None else "http"

    @property
    def key_store(self) -> Path:
        """The key store in use: `keys_file`, or in dev mode the development store."""
        if self.keys_file is not None:
            return self.keys_file
        if self.dev_mode:
            return DEFAULT_KEYS_FILE
        raise GatewayConfigError(
            "no key store: pass --keys-file (TRITONKIT_GATEWAY_KEYS_FILE); `make "
            "production-secrets` writes one, `add-key` adds to it; or --dev-mode for the "
            "development keys")


def production_problems(settings: GatewaySettings) -> list[str]:
    """Why `settings` must not serve outside dev mode (empty in dev mode): development keys,
    an empty or unreadable key store, plain HTTP that nothing said was intended."""
    if settings.dev_mode:
        return []
    problems = []
    try:
        path = settings.key_store
    except GatewayConfigError as exc:
        return [str(exc)]
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        problems.append(f"the key store {path} does not exist: make it with `make "
                        "production-secrets` or `add-key`")
    except PermissionError:
        problems.append(f"the key store {path} is not readable by this user (uid "
                        f"{os.getuid()}): give it mode 0444 inside a directory only its owner "
                        "can enter (what `make production-secrets` writes)")
    except ValueError as exc:
        problems.append(f"the key store {path} is not JSON: {exc}")
    else:
        keys = data.get("keys", []) if isinstance(data, dict) else []
        if not keys:
            problems.append(f"the key store {path} holds no key: every call would get 401")
        development = [k.get("name", "?") for k in keys if k.get("development")]
        plain = [p.name for p in (path.parent / DEV_KEY_FILES[0], path.parent / DEV_KEY_FILES[1])
                 if p.exists()]
        if development or plain:
            problems.append(f"the key store {path} holds development keys "
                            f"({', '.join(development or plain)}), whose plain text lies on "
                            "disk: use keys from `add-key` (or start with --dev-mode)")
    if settings.tls_cert is None and not settings.plain_http:
        problems.append("no TLS: keys would travel in clear text; pass --tls-cert and "
                        "--tls-key (`make production-secrets` writes a pair), or --plain-http "
                        "behind a proxy that terminates TLS")
    return problems
