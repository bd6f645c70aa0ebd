"""Locust load test of the public gateway: `POST /predict` with an API key, in front of Triton.

The same held-out customers, drift and invalid shares, thresholds and shapes as
`locustfile.py`; `--host` is the gateway (`make gateway`: http://127.0.0.1:8080). The key is
`--api-key` (LOCUST_API_KEY), else the development key of `make api-key`::

    make gateway                                      # in another terminal, beside `make up`
    locust -f loadtests/locustfile_gateway.py --headless -u 20 -r 20 -t 30s \
        --host http://127.0.0.1:8080 --csv loadtests/results/gateway --max-p95-ms 100

An answer from the gateway's fallback model (`degraded: true`) is a success under its own
name, `/predict [fallback answer]`; a 429 (the key's rate limit, 200/s by default) is a failure.
"""

from __future__ import annotations

import logging
import random
import sys
from typing import Any

import orjson
from locust import FastHttpUser, constant, events, task
from locust.env import Environment

import options
import reports
import shapes
import thresholds
from tritonkit.gateway.auth import KEY_HEADER
from tritonkit.gateway.settings import DEFAULT_KEYS_FILE
from workload import NAME_SUFFIXES

# reports and thresholds: imported for the listeners they add.
__all__ = ["GatewayUser", "LoadShape", "reports", "thresholds"]

logger = logging.getLogger(__name__)

#: The plain development key that `make api-key` keeps beside the key store.
DEV_KEY_FILE = DEFAULT_KEYS_FILE.parent / "dev-api-key"
#: The ensemble behind the gateway.
ENSEMBLE = "churn"

LoadShape = shapes.selected()


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    parser.add_argument(
        "--api-key", default="", env_var="LOCUST_API_KEY", is_secret=True,
        help=f"the gateway's API key, sent in {KEY_HEADER}; default: the development key of "
             f"`make api-key` ({DEV_KEY_FILE})")


def api_key(environment: Environment) -> str:
    """--api-key, else the development key; exits with a message when there is neither."""
    given = str(getattr(environment.parsed_options, "api_key", "") or "")
    if given:
        return given
    if DEV_KEY_FILE.exists():
        return DEV_KEY_FILE.read_text().strip()
    logger.error("no API key: pass --api-key (or LOCUST_API_KEY), or run `make api-key` to "
                 "create the development key in %s", DEV_KEY_FILE)
    sys.exit(1)


@events.init.add_listener
def _check_key(environment: Environment, **_: Any) -> None:
    if environment.parsed_options is not None:
        api_key(environment)


class GatewayUser(FastHttpUser):
    """POST /predict, one customer per request, with the API key in its header."""

    payload_format = "gateway_body"
    wait_time = constant(0)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.headers = {KEY_HEADER: api_key(self.environment),
                        "Content-Type": "application/json"}

    @task
    def predict(self) -> None:
        payload = options.workload().pick(self.rng, ENSEMBLE)
        name = "/predict" + NAME_SUFFIXES[payload.kind]
        # data: bytes goes through as it is (Locust's hint says str or dict).
        with self.client.post("/predict", data=payload.gateway_body,  # type: ignore[arg-type]
                              headers=self.headers, name=name,
                              catch_response=True) as response:
            status = response.status_code
            body = response.content or b""
            if payload.refused:
                if status == 400:
                    response.success()
                else:
                    response.failure(f"HTTP {status}, expected 400: {body[:200]!r}")
                return
            if status != 200:
                response.failure(f"HTTP {status}: {body[:200]!r}")
                return
            try:
                answer = orjson.loads(body)
                answer["churn_probability"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                response.failure(f"answer without churn_probability: {body[:200]!r}")
                return
            if answer.get("degraded"):
                response.request_meta["name"] = name + " [fallback answer]"
            response.success()
