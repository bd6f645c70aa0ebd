"""Where the sidecar reads its counters: Triton's own `/metrics`, or a Prometheus server.

Both return the same raw samples (name, labels, value) of the series the sidecar needs: the
drift counters of the python steps (`tritonkit.drift.binning.METRICS`) and Triton's
`nv_inference_*` counters and summaries. Summing over replicas and instances is left to the
reader (`DriftLayout.vector`, `Window.total`), so a Prometheus that scrapes several Tritons
gives fleet-wide windows with no query of its own::

    source = TritonMetricsSource("http://127.0.0.1:8002/metrics")
    samples = source.scrape()        # raises SourceError naming the URL when it cannot
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tritonkit.drift.binning import METRICS as DRIFT_METRICS
from tritonkit.errors import TritonKitError
from tritonkit.monitor.windows import Sample
from tritonkit.repository.step_contract import REFUSED_REQUESTS

logger = logging.getLogger(__name__)

#: Prefix of Triton's per-model series (counters, and summaries with summary latencies on).
TRITON_PREFIX = "nv_inference_"
#: What a Prometheus source asks for: the same series, with every label Prometheus added.
_TYPE_LINE = re.compile(r"^# TYPE (\S+) ", re.MULTILINE)
PROMETHEUS_SELECTOR = '{__name__=~"tritonkit_.*|nv_inference_.*"}'


class SourceError(TritonKitError):
    """A metrics source could not be read; the message names it and the likely fix."""


class MetricSource(Protocol):
    """Something the sidecar scrapes. `name` is the `source` label of its scrape errors."""

    name: str
    url: str

    def scrape(self) -> list[Sample]:
        """The current samples of the series the sidecar reads, or raise SourceError."""

    def close(self) -> None:
        """Release connections."""


def wanted(name: str) -> bool:
    """True for the series the sidecar reads (not, e.g., its own exported metrics)."""
    return name in DRIFT_METRICS or name == REFUSED_REQUESTS or name.startswith(TRITON_PREFIX)


class TritonMetricsSource:
    """Triton's Prometheus endpoint (`--metrics-port`), read and parsed directly."""

    name = "triton"

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s))

    def scrape(self) -> list[Sample]:
        text = _get(self._client, self.url, "Triton's metrics endpoint",
                    "is tritonserver running with --metrics-port, and is this its port? "
                    "(--metrics-url / TRITONKIT_MONITOR_METRICS_URL)").text
        try:
            families = list(text_string_to_metric_families(text))
        except ValueError as exc:
            raise SourceError(f"{self.url} did not answer Prometheus text: {exc}") from exc
        # The parser names every counter sample `<family>_total`; Triton's counters have no
        # such suffix on the wire (nor in a Prometheus server): keep the name as exposed.
        exposed = set(_TYPE_LINE.findall(text))
        samples: list[Sample] = []
        for family in families:
            for sample in family.samples:
                name = sample.name
                if family.type == "counter" and name not in exposed and family.name in exposed:
                    name = family.name
                if wanted(name):
                    samples.append((name, sample.labels, float(sample.value)))
        return samples

    def close(self) -> None:
        self._client.close()


class PrometheusSource:
    """A Prometheus server's instant-query API, holding the series of every Triton replica."""

    name = "prometheus"

    def __init__(self, url: str, timeout_s: float = 5.0,
                 selector: str = PROMETHEUS_SELECTOR) -> None:
        self.url = url.rstrip("/")
        self.selector = selector
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s))

    def scrape(self) -> list[Sample]:
        response = _get(self._client, f"{self.url}/api/v1/query", "Prometheus",
                        "is Prometheus running, and is this its URL? "
                        "(--prometheus-url / TRITONKIT_MONITOR_PROMETHEUS_URL)",
                        params={"query": self.selector})
        try:
            body = response.json()
            if body.get("status") != "success":
                raise SourceError(f"Prometheus at {self.url} refused the query "
                                  f"{self.selector}: {body.get('error', body)}")
            result = body["data"]["result"]
            samples: list[Sample] = []
            for series in result:
                labels: Mapping[str, str] = series["metric"]
                name = labels.get("__name__", "")
                if wanted(name):
                    samples.append((name, {k: v for k, v in labels.items() if k != "__name__"},
                                    float(series["value"][1])))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise SourceError(f"Prometheus at {self.url} answered something that is not an "
                              f"instant-query vector: {exc!r}") from exc
        return samples

    def close(self) -> None:
        self._client.close()


def _get(client: httpx.Client, url: str, what: str, hint: str,
         params: Mapping[str, str] | None = None) -> httpx.Response:
    try:
        response = client.get(url, params=params)
    except httpx.TimeoutException as exc:
        raise SourceError(f"{what} at {url} did not answer in time: {hint}") from exc
    except httpx.HTTPError as exc:
        raise SourceError(f"cannot reach {what} at {url} ({exc}): {hint}") from exc
    if response.status_code != 200:
        raise SourceError(f"{what} at {url} answered HTTP {response.status_code}: "
                          f"{response.text[:200]}")
    return response


class FallbackSource:
    """Prometheus first; while it cannot be reached, Triton's own /metrics (one replica: the
    one the sidecar probes), with `falling_back` saying why. Each switch of source is counted in
    `switches`: the sidecar starts its windows afresh then, as the two count differently (a sum
    over replicas, one replica)."""

    def __init__(self, primary: PrometheusSource, secondary: TritonMetricsSource) -> None:
        self.primary = primary
        self.secondary = secondary
        self.falling_back: str | None = None  # why the secondary answers, while it does
        self.switches = 0

    @property
    def name(self) -> str:
        return self.primary.name

    @property
    def url(self) -> str:
        return self.primary.url

    def scrape(self) -> list[Sample]:
        try:
            samples = self.primary.scrape()
        except SourceError as exc:
            if self.falling_back is None:
                self.switches += 1
                logger.warning("reading %s directly: %s", self.secondary.url, exc)
            self.falling_back = str(exc)
            return self.secondary.scrape()
        if self.falling_back is not None:
            self.switches += 1
            logger.info("Prometheus at %s answers again: reading it", self.primary.url)
        self.falling_back = None
        return samples

    def close(self) -> None:
        self.primary.close()
        self.secondary.close()
