"""The python steps publish exactly the drift counts of the traffic they get, on Triton's /metrics.

The expected counts come from the same binning rule (`tritonkit.drift.binning`) applied in this
process to the customers sent; the published ones are read back from a real tritonserver's
/metrics with the reader's own `DriftLayout.vector`, in the fused and the split layouts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tritonkit.client.customers import columns_from_rows
from tritonkit.drift.binning import DriftCounter, DriftLayout
from tritonkit.serve.server import TritonServer
from tritonkit.spec import TabularClassifier
from tritonkit.tabular.artifacts import TabularArtifacts
from tritonkit.tabular.schema import FeatureSchema

from ..support import (
    body_for,
    post,
    repeated_rows,
    samples,
    serve,
    settled_drift,
    with_input,
)


@pytest.fixture(scope="module", params=["fused", "split"])
def layout_server(request: pytest.FixtureRequest, triton: TritonServer,
                  repositories: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[TritonServer]:
    if request.param == "fused":
        yield triton
        return
    server = serve(repositories["embedded_split"], tmp_path_factory.mktemp("triton-split"))
    yield server
    server.stop(check=True)


def _published(server: TritonServer, layout: DriftLayout) -> np.ndarray:
    return layout.vector(samples(server))


def _wait_for_rows(server: TritonServer, layout: DriftLayout, before: np.ndarray, rows: float,
                   timeout_s: float = 15.0) -> np.ndarray:
    """The published vector once every row sent has been flushed (steps flush every second)."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = _published(server, layout)
        done = now[layout.rows] - before[layout.rows] >= rows
        if done and now[layout.risk_first:layout.risk_first + 3].sum() >= \
                before[layout.risk_first:layout.risk_first + 3].sum() + rows - 2:
            time.sleep(1.5)  # one more flush interval: the model step may flush later
            return _published(server, layout)
        if time.monotonic() > deadline:
            return now
        time.sleep(0.2)


def test_steps_publish_the_drift_counts_of_the_traffic_when_customers_are_sent(
    layout_server: TritonServer, artifacts: TabularArtifacts, schema: FeatureSchema,
    customers: list[dict[str, Any]], in_process: dict[str, np.ndarray],
    churn_spec: TabularClassifier,
) -> None:
    profile = json.loads(artifacts.profile.read_text())
    layout = DriftLayout.from_profile(profile, "churn", str(churn_spec.version))
    before = settled_drift(layout_server, layout)

    for start in range(0, len(customers), 50):
        chunk = customers[start:start + 50]
        body = {"inputs": [
            {"name": name, "shape": [len(chunk), 1], "datatype": item["datatype"],
             "data": [value for c in chunk for value in body_for(c)["inputs"][k]["data"]]}
            for k, item in enumerate(body_for(chunk[0])["inputs"]) for name in [item["name"]]
        ]}
        status, answer = post(layout_server, body)
        assert status == 200, answer
    refused = [
        (with_input(body_for(customers[0]), "contract", data=["Weekly"]), "unknown_category"),
        (with_input(body_for(customers[1]), "gender", data=[""]), "missing_value"),
        (with_input(body_for(customers[2]), "tenure", data=[5000]), "out_of_bounds"),
        (repeated_rows(with_input(body_for(customers[3]), "totalcharges",
                                  data=[float("inf")]), 2), "non_finite"),
    ]
    for body, _ in refused:
        assert post(layout_server, body)[0] == 400

    expected = DriftCounter(layout)
    columns = {n: a.reshape(-1) for n, a in columns_from_rows(customers).items()}
    encoded = schema.encode_batch(columns)
    expected.count_features(encoded.numbers, encoded.codes)
    expected.count_predictions(in_process["churn_probability"], in_process["risk_level"])
    for body, reason in refused:
        rows = body["inputs"][0]["shape"][0]
        bad = {item["name"]: np.array(item["data"], dtype=object if item["datatype"] == "BYTES"
                                      else np.float64) for item in body["inputs"]}
        encoded = schema.encode_batch(bad)
        blank = np.array([[v == "" for v in bad[c.name]] for c in schema.categorical])
        expected.count_features(encoded.numbers, encoded.codes, blank)
        expected.count_rejected(reason, rows)
    want = np.zeros(len(layout))
    for index, count in expected.take():
        want[index] = count

    got = _wait_for_rows(layout_server, layout, before, want[layout.rows]) - before
    differ = [(layout.series[i], got[i], want[i]) for i in np.flatnonzero(got != want)]
    assert not differ, differ[:10]
    window = layout.window(got)
    assert window.unseen["contract"] == 1 and window.missing["gender"] == 1
    assert window.rejected == {"unknown_category": 1, "missing_value": 1, "non_finite": 2,
                               "out_of_bounds": 1, "malformed_request": 0, "internal_error": 0}
    assert window.rows == len(customers) + 5
