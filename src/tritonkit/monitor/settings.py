"""The monitoring sidecar's settings, and the reference profile they name: what the drift
judge compares the served traffic with. `cli.py` documents each setting as a flag with its
environment variable; `MonitorService` (monitor/service.py) runs with them::

    settings = MonitorSettings(triton_url="http://127.0.0.1:8000", port=0)
    profile, version, path = load_profile(settings)   # artifacts/churn/<version>/...
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tritonkit.errors import ArtifactMissingError, TritonKitError
from tritonkit.monitor.alerts import DEFAULT_RULES
from tritonkit.tabular.artifacts import TabularArtifacts


@dataclasses.dataclass(frozen=True, kw_only=True)
class MonitorSettings:
    """How the sidecar runs; `cli.py` documents each as a flag with its environment variable."""

    triton_url: str = "http://127.0.0.1:8000"
    metrics_url: str | None = None  # None: Triton's host, port 8002, /metrics
    prometheus_url: str | None = None  # read the counters from Prometheus instead
    host: str = "127.0.0.1"
    port: int = 9108  # docker-compose.yml's; 0: any free port (see MonitorService.port)
    interval_s: float = 15.0
    window_s: float = 300.0
    min_rows: int = 500
    alerts_file: Path = DEFAULT_RULES
    profile_path: Path | None = None  # None: artifacts/churn/<version>/reference_profile.json
    model: str = "churn"  # the model whose drift is judged (its ensemble's name)
    #: the entry points to watch; empty: every one Triton serves that the spec knows
    entry_points: tuple[str, ...] = ()
    version: str | None = None  # None: the spec's version of `model`
    alertmanager_url: str | None = None
    webhook_url: str | None = None
    admin_key: str | None = None
    health_interval_s: float = 5.0
    probes: int = 4
    latency_budget_ms: float = 1000.0
    timeout_s: float = 5.0
    heal: bool = True

    def resolved_metrics_url(self) -> str:
        if self.metrics_url:
            return self.metrics_url
        host = urlsplit(self.triton_url).hostname or "127.0.0.1"
        return f"http://{host}:8002/metrics"


def load_profile(settings: MonitorSettings) -> tuple[dict[str, Any], str, Path]:
    """(profile, version, its path): a clear error names the path and `make build-engines`."""
    version = settings.version
    if version is None:
        from tritonkit.spec import load_spec

        pipelines = load_spec().models
        if settings.model not in pipelines:
            raise TritonKitError(f"model {settings.model!r} is not in configs/models.yaml "
                                 f"(it has {', '.join(pipelines)}): pass --model")
        version = str(pipelines[settings.model].version)
    path = (settings.profile_path
            or TabularArtifacts.for_version(int(version), name=settings.model).profile)
    try:
        profile = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ArtifactMissingError(f"reference profile {path} not found: run `make "
                                   "build-engines`, or pass --profile") from None
    except ValueError as exc:
        raise ArtifactMissingError(f"reference profile {path} is not valid JSON ({exc}): run "
                                   "`make build-engines` again") from None
    return profile, str(version), Path(path)
