"""Runtime settings of the gateway: one frozen pydantic-settings class, each field described once
(its description is the `--help` of its flag).

`tritonkit.gateway.cli serve` takes every field as a flag (`--triton-url`) that falls back to
the environment variable TRITONKIT_GATEWAY_<FIELD> (`tritonkit.settings`); tests build it
directly (the variables still apply to what they leave out)::

    settings = GatewaySettings(triton_url="127.0.0.1:8001", protocol="grpc", port=0)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from limits import parse
from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from tritonkit.errors import TritonKitError
from tritonkit.paths import CACHE
from tritonkit.settings import ServiceSettings

GATEWAY_DIR = CACHE / "gateway"
#: The key store (hashes only) that `make up` and `make api-key` create on first use.
DEFAULT_KEYS_FILE = GATEWAY_DIR / "keys.json"
#: Where `make certs` writes its self-signed pair.
CERTS_DIR = CACHE / "certs"
#: The plain development keys `ensure_dev_keys` keeps beside the store (caller, admin).
DEV_KEY_FILES = ("dev-api-key", "dev-admin-key")
#: How the gateway talks to Triton: KServe v2 over HTTP/1.1 or gRPC.
WireProtocol = Literal["http", "grpc"]
ENV_PREFIX = "TRITONKIT_GATEWAY_"


class GatewayConfigError(TritonKitError):
    """The gateway's settings cannot serve: the message says what to change."""


class GatewaySettings(ServiceSettings):
    """How the gateway runs: flags of `tritonkit.gateway.cli serve`, TRITONKIT_GATEWAY_*."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)

    # -- Triton ---------------------------------------------------------------------------------
    # The default is what every launcher passes (make up, make gateway, docker compose,
    # Kubernetes): Triton's HTTP port, which costs the gateway less CPU per call than gRPC.
    triton_url: str = Field(
        "127.0.0.1:8000",
        description="host:port of Triton: its HTTP port for http, its gRPC port for grpc; "
                    "several replicas comma-separated (least outstanding requests first, a "
                    "failed one ejected, a call it did not run retried on another)")
    protocol: WireProtocol = Field(
        "http", description="protocol to Triton: http (binary tensors on keep-alive "
                            "connections: less of the gateway's CPU per call) or grpc")
    triton_timeout_s: float = Field(1.0, description="deadline of one call to Triton, seconds")
    triton_admin_url: str | None = Field(
        None, description="Triton's HTTP host:port for /admin/models/<name>/load and the "
                          "version loads (the repository API), one per replica in "
                          "--triton-url's order (default: --triton-url when --protocol is http)")
    triton_admin_key_file: Path | None = Field(
        None, description="file with the key of Triton's restricted APIs, which the admin "
                          "reload sends (none: keyless, which a restricted Triton refuses)")
    # -- the public side ------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(8080, description="port to listen on (0: any free port, reported at "
                                        "start)")
    tls_cert: Path | None = Field(
        None, description="TLS certificate (PEM); with --tls-key the gateway serves HTTPS only")
    tls_key: Path | None = Field(None, description="TLS private key (PEM)")
    keys_file: Path | None = Field(
        None, description="key store: JSON with the SHA-256 of each API key, never the keys "
                          "(required outside dev mode; in dev mode the development store, "
                          ".cache/gateway/keys.json)")
    dev_mode: bool = Field(
        False, description="development mode (make up, make gateway): the development keys, "
                           "plain HTTP and the interactive docs. Outside it the gateway refuses "
                           "development keys, an empty or unreadable key store, and plain HTTP "
                           "without --plain-http")
    plain_http: bool = Field(
        False, description="serve plain HTTP outside dev mode (only behind a proxy that "
                           "terminates TLS)")
    docs: bool = Field(True, description="serve /docs and /openapi.json (the API's interactive "
                                         "documentation)")
    metrics_port: int | None = Field(
        None, description="serve /metrics on this port (plain HTTP, for Prometheus on an "
                          "internal network) instead of the public one")
    header_timeout_s: float = Field(
        10.0, description="longest a request's headers may take to arrive, seconds (408 beyond)")
    body_timeout_s: float = Field(
        10.0, description="longest a request's body may take to arrive once its headers did, "
                          "seconds (408 beyond)")
    keep_alive_timeout_s: float = Field(
        5.0, description="idle seconds after which a kept-alive connection is closed")
    max_connections: int = Field(
        1024, description="connections open at once; a request beyond gets 503 with "
                          "Retry-After")
    max_batch: int = Field(
        256, description="most customers in one /predict/batch request (the model's "
                         "max_batch_size)")
    max_body_bytes: int = Field(
        256 * 1024, description="largest request body accepted, bytes (413 beyond, checked "
                                "before reading it)")
    # -- rate limits ----------------------------------------------------------------------------
    rate_limit_per_key: str = Field(
        "500/second", description="customers per API key in the `limits` notation (e.g. "
                                  "10000/minute): a /predict costs 1, a batch of n customers n; "
                                  "a batch above it is never served (keep it at least "
                                  "--max-batch)")
    rate_limit_global: str = Field(
        "5000/second", description="customers for all keys together (a request it refuses "
                                   "costs its key nothing)")
    rate_limit_unauthenticated: str = Field(
        "20/second", description="requests without a valid key (401s, /healthz, /readyz, "
                                 "/metrics, /docs) per client address; an address over it gets "
                                 "429 before any key it sends is checked")
    rate_limit_storage: str = Field(
        "memory://", description="where rate-limit counters live: memory:// (per gateway "
                                 "process) or async+redis://host:6379 (shared by every gateway)")
    rate_limit_fail_open: bool = Field(
        True, description="when the rate-limit store cannot be reached: serve anyway (true) or "
                          "answer 503 (false)")
    # -- coalescing, replicas, rollout ----------------------------------------------------------
    coalesce: bool = Field(
        True, description="coalesce concurrent /predict calls into one Triton request")
    coalesce_max_wait_s: float = Field(
        0.002, description="longest a call waits for others to join its Triton request, "
                           "seconds")
    coalesce_max_rows: int = Field(
        64, description="most customers in one coalesced Triton request (at most the model's "
                        "max_batch_size)")
    coalesce_max_in_flight: int = Field(
        2, description="Triton requests in flight at once from the coalescer; more calls wait "
                       "and merge")
    coalesce_max_pending_rows: int = Field(
        512, description="most customers the coalescer holds, queued or sent and not yet "
                         "answered; a /predict beyond gets 503 with Retry-After")
    replica_eject_failures: int = Field(
        2, description="consecutive calls a replica cannot take (or 500s another replica then "
                       "answers, or health checks finding the model not ready) that take it "
                       "out of rotation")
    replica_health_interval_s: float = Field(
        1.0, description="seconds between health checks of each replica (an ejected one also "
                         "gets a real inference before it comes back)")
    rollout_file: Path | None = Field(
        None, description='JSON file with the rollout\'s weights ({"weights": {"1": 95, "2": '
                          '5}, "stable": "1"}), read at start and whenever it changes (a '
                          "ConfigMap in Kubernetes: every gateway routes alike); none: weights "
                          "come from PUT /admin/rollout only")
    # -- breaker, fallback, readiness -----------------------------------------------------------
    breaker_failures: int = Field(
        5, description="consecutive failures of the Triton path that open the circuit breaker")
    breaker_reset_s: float = Field(
        2.0, description="how long an open breaker waits before one probe goes to Triton, "
                         "seconds")
    fallback: bool = Field(
        True, description="answer with the fallback model while Triton cannot (false: 503)")
    ready_cache_s: float = Field(
        1.5, description="how long a /readyz answer (a real inference) is reused, seconds")
    model_version: int = Field(
        1, description="version of the churn artefacts (schema, fallback model) to load")
    # -- the process ----------------------------------------------------------------------------
    log_level: str = Field("info", description="uvicorn and gateway log level")
    access_log: bool = Field(
        False, description="log every request (path and status; keys are never logged)")

    @model_validator(mode="after")
    def _check(self) -> GatewaySettings:
        problems = []
        if (self.tls_cert is None) != (self.tls_key is None):
            problems.append("tls_cert and tls_key go together: give both or neither")
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
        return self

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
