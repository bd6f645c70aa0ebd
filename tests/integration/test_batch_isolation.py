"""One request's failure stays its own when it shares an `execute` call with good requests.

Each layout is served with a one-second queue delay, so that requests sent together are certain
to form one dynamic batch: Triton's `nv_inference_exec_count` of the step rises by exactly one
while the request counters rise by the number sent. The served ONNX graph is poisoned to raise
inside onnxruntime for customers who pay by mailed check (valid customers), which stands for any
failure of the vectorised pass that only some requests cause.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import onnx
import pytest

from tritonkit.families.render import render_repository
from tritonkit.repository.entry_points import ENSEMBLE_FAILURE_MULTIPLICITY
from tritonkit.serve.server import TritonServer
from tritonkit.spec import Spec
from tritonkit.tabular.artifacts import TabularArtifacts
from tritonkit.tabular.schema import FeatureSchema

from ..support import (
    body_for,
    counter,
    counter_settled,
    poisoned,
    post,
    probability,
    serve,
    with_input,
    with_queue_delay,
)

QUEUE_DELAY_US = 1_000_000
POISON = ("paymentmethod", "Mailed check")
#: layout -> (the step that validates, the step that runs onnxruntime)
LAYOUTS = {"fused": ("churn_fused", "churn_fused"),
           "split": ("churn_preprocess", "churn_model")}


def _encoded_column(schema: FeatureSchema, name: str, category: str) -> int:
    offset = len(schema.numeric)
    for cat in schema.categorical:
        if cat.name == name:
            return offset + cat.categories.index(category)
        offset += len(cat.categories)
    raise KeyError(name)


@pytest.fixture(scope="module", params=list(LAYOUTS))
def batching_triton(
    request: pytest.FixtureRequest, spec: Spec, artifacts: TabularArtifacts,
    schema: FeatureSchema, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, TritonServer]]:
    layout = request.param
    slow = with_queue_delay(spec, QUEUE_DELAY_US).with_fused_steps("embedded", layout == "fused")
    folder = tmp_path_factory.mktemp(f"repo-poisoned-{layout}")
    render_repository(slow, "embedded", folder)
    onnx_step = LAYOUTS[layout][1]
    graph = poisoned(onnx.load(artifacts.onnx), _encoded_column(schema, *POISON))
    onnx.save(graph, folder / onnx_step / "1" / "model.onnx")
    server = serve(folder, tmp_path_factory.mktemp(f"triton-{layout}"))
    yield layout, server
    server.stop(check=True)


def _send_together(triton: TritonServer, bodies: list[dict[str, Any]]
                   ) -> list[tuple[int, dict[str, Any]]]:
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(lambda body: post(triton, body), bodies))


def _clean(customers: list[dict[str, Any]], count: int) -> list[int]:
    """Indices of the first `count` customers the poisoned graph answers."""
    return [i for i, c in enumerate(customers) if c[POISON[0]] != POISON[1]][:count]


def test_invalid_request_fails_alone_when_it_shares_an_execute_with_valid_ones(
    batching_triton: tuple[str, TritonServer], customers: list[dict[str, Any]],
    in_process: dict[str, np.ndarray],
) -> None:
    layout, triton = batching_triton
    validating_step = LAYOUTS[layout][0]
    good = _clean(customers, 8)
    bodies = [body_for(customers[i]) for i in good]
    bodies += [with_input(body_for(customers[i]), "contract", data=["Weekly"]) for i in good]
    executions = counter(triton, "nv_inference_exec_count", model=validating_step)
    # Triton 2.51 counts a request that a python step answered with an error as a success of
    # the step, and as two failures (reason OTHER) of the ensemble: docs/platform.md.
    succeeded = counter(triton, "nv_inference_request_success", model="churn")
    failed = counter(triton, "nv_inference_request_failure", model="churn")

    answers = _send_together(triton, bodies)

    assert counter_settled(triton, "nv_inference_exec_count", executions + 1,
                           model=validating_step) - executions == 1
    assert counter_settled(triton, "nv_inference_request_success", succeeded + 8,
                           model="churn") - succeeded == 8
    failures = ENSEMBLE_FAILURE_MULTIPLICITY * 8
    assert counter_settled(triton, "nv_inference_request_failure", failed + failures,
                           model="churn") - failed == failures
    for i, (status, answer) in zip(good, answers[:8], strict=True):
        assert status == 200, answer
        assert probability(answer) == pytest.approx(in_process["churn_probability"][i, 0],
                                                    abs=1e-6)
    for status, answer in answers[8:]:
        assert status == 400, answer
        assert "contract: unknown category 'Weekly'" in answer["error"]


def test_onnxruntime_failure_fails_only_its_requests_when_they_share_an_execute(
    batching_triton: tuple[str, TritonServer], customers: list[dict[str, Any]],
    in_process: dict[str, np.ndarray],
) -> None:
    layout, triton = batching_triton
    onnx_step = LAYOUTS[layout][1]
    good = _clean(customers, 8)
    poisoned_rows = [i for i, c in enumerate(customers) if c[POISON[0]] == POISON[1]][:4]
    bodies = [body_for(customers[i]) for i in good + poisoned_rows]
    executions = counter(triton, "nv_inference_exec_count", model=onnx_step)

    answers = _send_together(triton, bodies)

    assert counter_settled(triton, "nv_inference_exec_count", executions + 1,
                           model=onnx_step) - executions == 1
    for i, (status, answer) in zip(good, answers[:8], strict=True):
        assert status == 200, answer
        assert probability(answer) == pytest.approx(in_process["churn_probability"][i, 0],
                                                    abs=1e-6)
    for status, answer in answers[8:]:
        assert status == 500, answer
        message = answer["error"]
        assert f"{onnx_step}" in message and "failed on this request" in message
        assert "Gather" in message or "out of" in message, message
    # The server keeps serving: a lone good request is answered.
    status, answer = post(triton, body_for(customers[good[0]]))
    assert status == 200
