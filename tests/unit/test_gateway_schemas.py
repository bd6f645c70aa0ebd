"""The gateway's typed contract without Triton: every problem named by its field."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

from tritonkit.client.fallback import FallbackModel
from tritonkit.gateway.auth import KeyStore, add_key, ensure_dev_keys, presented_key
from tritonkit.gateway.schemas import ContractModels, customer_row, problems
from tritonkit.tabular.artifacts import TabularArtifacts
from tritonkit.tabular.contract import contract
from tritonkit.tabular.schema import FeatureSchema

CHURN = contract("churn")
ALL_FEATURES = CHURN.features
CATEGORICAL_FEATURES = CHURN.categorical
NUMERIC_BOUNDS = CHURN.bounds




@pytest.fixture(scope="module")
def models(schema: FeatureSchema) -> ContractModels:
    return ContractModels.build(schema, max_batch=4)


@pytest.fixture(scope="module")
def valid(customers: list[dict[str, Any]]) -> dict[str, Any]:
    features = {name: customers[0][name] for name in ALL_FEATURES}
    features["seniorcitizen"] = int(features["seniorcitizen"])
    return {"customer_id": customers[0]["customerid"], "features": features}


def _problems(model: type[BaseModel], body: Any) -> list[dict[str, str]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(ValidationError) as caught:
        model.model_validate_json(raw)
    return problems(caught.value)


def _with(valid: dict[str, Any], **features: Any) -> dict[str, Any]:
    return {**valid, "features": {**valid["features"], **features}}


def test_contract_accepts_a_customer_when_every_feature_is_valid(
        models: ContractModels, valid: dict[str, Any]) -> None:
    parsed = models.predict.model_validate_json(json.dumps(valid))
    assert customer_row(parsed) == valid["features"]


@pytest.mark.parametrize("name", ALL_FEATURES)
def test_contract_names_the_feature_when_its_value_is_out_of_range_or_unknown(
        models: ContractModels, valid: dict[str, Any], name: str) -> None:
    wrong = "Sometimes" if name in CATEGORICAL_FEATURES else int(NUMERIC_BOUNDS[name][1]) + 1
    found = _problems(models.predict, _with(valid, **{name: wrong}))
    assert [p["field"] for p in found] == [f"features.{name}"]
    expected = "Input should be" if name in CATEGORICAL_FEATURES else "less than or equal"
    assert expected in found[0]["message"]


@pytest.mark.parametrize("name", ALL_FEATURES)
def test_contract_names_the_feature_when_its_type_is_wrong(
        models: ContractModels, valid: dict[str, Any], name: str) -> None:
    wrong: Any = 3 if name in CATEGORICAL_FEATURES else "12"
    found = _problems(models.predict, _with(valid, **{name: wrong}))
    assert [p["field"] for p in found] == [f"features.{name}"]


def test_contract_lists_every_problem_when_several_fields_are_wrong(
        models: ContractModels, valid: dict[str, Any]) -> None:
    body = _with(valid, tenure=-1, contract="Weekly", colour="blue")
    del body["features"]["gender"]
    found = {p["field"]: p["message"] for p in _problems(models.predict, body)}
    assert set(found) == {"features.tenure", "features.contract", "features.colour",
                          "features.gender"}
    assert found["features.colour"].startswith("unknown field")
    assert found["features.gender"].startswith("missing field")
    assert "(got -1)" in found["features.tenure"]


def test_contract_refuses_booleans_and_fractions_when_a_number_is_expected(
        models: ContractModels, valid: dict[str, Any]) -> None:
    assert [p["field"] for p in _problems(models.predict, _with(valid, tenure=True))] == [
        "features.tenure"]
    assert [p["field"] for p in _problems(models.predict, _with(valid, seniorcitizen=0.5))] == [
        "features.seniorcitizen"]


def test_contract_refuses_nan_when_json_carries_it(models: ContractModels,
                                                   valid: dict[str, Any]) -> None:
    raw = json.dumps(_with(valid, monthlycharges=float("nan"))).encode()
    found = _problems(models.predict, raw)
    assert found == [{"field": "features.monthlycharges",
                      "message": "Input should be a finite number (got nan)"}]


@pytest.mark.parametrize("raw", [b"{nope", b"", b"\xff\xfe", b'{"customer_id": "a",'])
def test_contract_answers_a_body_problem_when_json_is_malformed(
        models: ContractModels, raw: bytes) -> None:
    found = _problems(models.predict, raw)
    assert found[0]["field"] == "body" and found[0]["message"].startswith("not valid JSON")


def test_contract_names_the_row_when_a_batch_customer_is_wrong(
        models: ContractModels, valid: dict[str, Any]) -> None:
    body = {"customers": [valid, _with(valid, paymentmethod="Cash")]}
    assert [p["field"] for p in _problems(models.batch, body)] == [
        "customers.1.features.paymentmethod"]
    too_many = {"customers": [valid] * 5}
    assert [p["field"] for p in _problems(models.batch, too_many)] == ["customers"]


def test_contract_refuses_an_empty_customer_id_when_one_is_sent(
        models: ContractModels, valid: dict[str, Any]) -> None:
    assert [p["field"] for p in _problems(models.predict, {**valid, "customer_id": ""})] == [
        "customer_id"]


def test_fallback_model_ranks_customers_like_the_labels_when_read_from_artefacts(
        artifacts: Any, customers: list[dict[str, Any]]) -> None:
    from sklearn.metrics import roc_auc_score

    model = FallbackModel.load(artifacts.fallback)
    assert model.version == "1-fallback"
    p = [model.probability(c) for c in customers]
    auc = roc_auc_score([int(c["churn"]) for c in customers], p)
    assert auc == pytest.approx(model.test_roc_auc, abs=1e-9)
    assert auc > 0.8


def test_key_store_knows_a_key_only_by_its_hash_when_one_is_added(tmp_path: Any) -> None:
    path = tmp_path / "keys.json"
    key = add_key(path, name="billing")
    assert key not in path.read_text()
    store = KeyStore.load(path)
    owner = store.authenticate(key)
    assert owner is not None and owner.name == "billing" and owner.role == "caller"
    assert store.authenticate(key[:-1] + "x") is None and store.authenticate(None) is None


def test_dev_keys_stay_the_same_when_asked_again(tmp_path: Any) -> None:
    first = ensure_dev_keys(tmp_path / "keys.json")
    assert ensure_dev_keys(tmp_path / "keys.json") == first
    store = KeyStore.load(tmp_path / "keys.json")
    assert store.authenticate(first["admin"]).role == "admin"  # type: ignore[union-attr]


def test_key_header_wins_over_bearer_when_both_are_sent() -> None:
    headers = [(b"authorization", b"Bearer second"), (b"x-api-key", b"first")]
    assert presented_key(headers) == "first"
    assert presented_key([(b"authorization", b"bearer only")]) == "only"


# -- the lean path to Triton: tensors on the wire, the HTTP client, rate limits, coalescing ----
def _rows(customers: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    rows = [{name: c[name] for name in ALL_FEATURES} for c in customers[:count]]
    for row in rows:
        row["seniorcitizen"] = int(row["seniorcitizen"])
    return rows


def test_wire_encodes_rows_as_tritonclient_does_when_100_customers_are_sent(
        customers: list[dict[str, Any]]) -> None:
    """The packed pair, as `features.pack` and tritonclient would send it (what ChurnClient
    with packed=True sends)."""
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc._utils import _get_inference_request

    from tritonkit.tabular.contract import contract
    from tritonkit.tabular.packed import PACKED_CATEGORICAL, PACKED_NUMERIC
    CHURN = contract("churn")
    pack = CHURN.pack
    from tritonkit.gateway import wire

    rows = _rows(customers, 100)
    numeric, categorical = pack({name: [r[name] for r in rows] for name in ALL_FEATURES})
    inputs = []
    for name, datatype, array in ((PACKED_NUMERIC, "FP32", numeric),
                                  (PACKED_CATEGORICAL, "BYTES", categorical)):
        item = grpcclient.InferInput(name, list(array.shape), datatype)
        item.set_data_from_numpy(array)
        inputs.append(item)
    outputs = [grpcclient.InferRequestedOutput(name) for name in ("churn_probability",
                                                                   "risk_level", "model_version")]
    expected = _get_inference_request(
        model_name="churn_packed", inputs=inputs, model_version="", request_id="",
        outputs=outputs, sequence_id=0, sequence_start=False, sequence_end=False, priority=0,
        timeout=None, parameters=None)
    assert wire.MODEL_NAME == "churn_packed"
    assert wire.grpc_request(rows) == expected
    body, header_length = wire.http_request(rows)
    header = json.loads(body[:header_length])
    assert [(i["name"], i["shape"]) for i in header["inputs"]] == [
        (PACKED_NUMERIC, [100, 4]), (PACKED_CATEGORICAL, [100, 15])]
    assert body[header_length:] == b"".join(expected.raw_input_contents)


def _bytes_tensor(values: list[str]) -> bytes:
    return b"".join(len(v.encode()).to_bytes(4, "little") + v.encode() for v in values)


def test_wire_reads_answers_when_outputs_come_back_in_any_order() -> None:
    import struct

    from tritonclient.grpc import service_pb2

    from tritonkit.gateway import wire

    raw = {"model_version": _bytes_tensor(["1", "1"]),
           "churn_probability": struct.pack("<2f", 0.25, 0.75),
           "risk_level": _bytes_tensor(["low", "high"])}
    expected = [(0.25, "low", "1"), (0.75, "high", "1")]
    response = service_pb2.ModelInferResponse()
    for name, data in raw.items():
        response.outputs.add(name=name, datatype="BYTES", shape=[2, 1])
        response.raw_output_contents.append(data)
    assert wire.grpc_answers(response, 2) == expected
    header = json.dumps({"outputs": [{"name": name, "parameters": {"binary_data_size": len(d)}}
                                     for name, d in raw.items()]}).encode()
    assert wire.http_answers(header + b"".join(raw.values()), len(header), 2) == expected


@pytest.mark.parametrize("broken", ["missing", "rows", "truncated"])
def test_wire_refuses_an_answer_when_triton_breaks_the_contract(broken: str) -> None:
    import struct

    from tritonclient.grpc import service_pb2

    from tritonkit.gateway import wire

    raw = {"churn_probability": struct.pack("<2f", 0.25, 0.75),
           "risk_level": _bytes_tensor(["low", "high"]),
           "model_version": _bytes_tensor(["1", "1"])}
    if broken == "missing":
        del raw["risk_level"]
    elif broken == "rows":
        raw["model_version"] = _bytes_tensor(["1"])
    else:
        raw["risk_level"] = raw["risk_level"][:-2]
    response = service_pb2.ModelInferResponse()
    for name, data in raw.items():
        response.outputs.add(name=name)
        response.raw_output_contents.append(data)
    with pytest.raises(wire.MalformedAnswer):
        wire.grpc_answers(response, 2)


class _CannedServer:
    """An HTTP/1.1 server on a free port that answers each request from a script: a
    (status, body) pair, "hang" (never answers) or "close" (drops the connection)."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.connections = 0
        self.handlers: list[Any] = []

    async def __aenter__(self) -> _CannedServer:
        import asyncio

        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        import asyncio

        self.server.close()
        for handler in self.handlers:
            handler.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)

    async def _serve(self, reader: Any, writer: Any) -> None:
        import asyncio

        self.connections += 1
        self.handlers.append(asyncio.current_task())
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                await reader.readexactly(length)
                answer = self.answers.pop(0) if self.answers else (200, b"{}")
                if answer == "hang":
                    await asyncio.sleep(30)
                if answer == "close":
                    break
                status, body = answer
                writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s"
                             % (status, len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the test is over
        finally:
            writer.close()


def test_http_client_keeps_one_connection_alive_when_requests_follow_each_other() -> None:
    import asyncio

    from tritonkit.gateway.http1 import ConnectionPool

    async def run() -> None:
        async with _CannedServer([(200, b"one"), (200, b"two")]) as server:
            pool = ConnectionPool("127.0.0.1", server.port)
            first = await pool.request(b"POST", b"/x", b"1", timeout_s=5)
            second = await pool.request(b"POST", b"/x", b"2", timeout_s=5)
            assert (first.status, first.body, second.body) == (200, b"one", b"two")
            assert server.connections == 1
            await pool.close()

    asyncio.run(run())


def test_http_client_raises_connection_error_when_a_new_connection_is_dropped() -> None:
    import asyncio

    from tritonkit.gateway.http1 import ConnectionPool

    async def run() -> None:
        async with _CannedServer(["close"]) as server:
            pool = ConnectionPool("127.0.0.1", server.port)
            try:
                with pytest.raises(ConnectionError):  # a fresh connection: not retried
                    await pool.request(b"POST", b"/x", b"1", timeout_s=5)
                assert server.connections == 1
            finally:
                await pool.close()

    asyncio.run(run())


def test_http_client_retries_once_when_the_server_closed_an_idle_connection() -> None:
    import asyncio

    from tritonkit.gateway.http1 import ConnectionPool

    async def run() -> None:
        async with _CannedServer([(200, b"one")]) as server:
            pool = ConnectionPool("127.0.0.1", server.port)
            assert (await pool.request(b"POST", b"/x", b"1", timeout_s=5)).body == b"one"
            server.answers = ["close", (200, b"again")]
            # the idle connection is dropped on its next use: retried on a new one
            assert (await pool.request(b"POST", b"/x", b"2", timeout_s=5)).body == b"again"
            assert server.connections == 2
            await pool.close()

    asyncio.run(run())


def test_http_client_times_out_and_drops_the_connection_when_the_server_hangs() -> None:
    import asyncio
    import time

    from tritonkit.gateway.http1 import ConnectionPool

    async def run() -> None:
        async with _CannedServer(["hang", (200, b"late")]) as server:
            pool = ConnectionPool("127.0.0.1", server.port)
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await pool.request(b"POST", b"/x", b"1", timeout_s=0.2)
            assert time.monotonic() - started < 1.0
            assert (await pool.request(b"POST", b"/x", b"2", timeout_s=5)).body == b"late"
            assert server.connections == 2  # the timed-out connection was not reused
            await pool.close()

    asyncio.run(run())


@pytest.mark.parametrize(("answer", "kind", "message"), [
    ((400, b'{"error": "contract: unknown category"}'), "bad_request", "unknown category"),
    ((503, b'{"error": "model not ready"}'), "unavailable", "model not ready"),
    ((404, b'{"error": "Request for unknown model: \'churn_packed\' has no available '
           b'versions"}'), "unavailable", "unknown model"),
    ((403, b'{"error": "This API is restricted, expecting header \'admin-key\'"}'),
     "server", "restricted"),
    ((409, b'{"error": "conflict"}'), "server", "conflict"),
    ((500, b'{"error": "stub died"}'), "server", "stub died"),
    ((502, b"<html>bad gateway</html>"), "server", "not Triton's error JSON"),
    ((200, b"not json"), "server", "not a KServe v2 response"),
    ("hang", "timeout", "did not answer within"),
    ("close", "unavailable", "cannot reach Triton"),
], ids=["400", "503", "404-unloaded", "403", "409", "500", "502-html", "200-garbage", "timeout",
        "dropped"])
def test_upstream_over_http_maps_an_answer_to_its_kind_when_triton_fails(
        customers: list[dict[str, Any]], answer: Any, kind: str, message: str) -> None:
    import asyncio

    from tritonkit.client.breaker import CircuitBreaker
    from tritonkit.gateway.upstream import TritonUpstream, UpstreamError

    async def run() -> UpstreamError:
        async with _CannedServer([answer]) as server:
            upstream = TritonUpstream(f"127.0.0.1:{server.port}", "http", timeout_s=0.3,
                                      breaker=CircuitBreaker())
            try:
                await upstream.infer(_rows(customers, 1))
            except UpstreamError as exc:
                return exc
            finally:
                await upstream.close()
        raise AssertionError("no error")

    error = asyncio.run(run())
    assert error.kind == kind and message in error.message


def test_process_windows_count_like_limits_when_hits_arrive_over_several_windows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import random
    import time

    from limits import parse
    from limits.aio.storage import MemoryStorage
    from limits.aio.strategies import SlidingWindowCounterRateLimiter

    from tritonkit.gateway.ratelimit import ProcessWindows

    now = [1_700_000_000.25]
    monkeypatch.setattr(time, "time", lambda: now[0])
    ours = ProcessWindows(clock=lambda: now[0])
    item = parse("5/second")
    generator = random.Random(7)

    async def run() -> tuple[list[Any], list[Any]]:
        theirs = SlidingWindowCounterRateLimiter(MemoryStorage())
        mine, reference = [], []
        for _ in range(400):
            now[0] += generator.choice([0.01, 0.05, 0.2, 0.7, 1.3])
            allowed = await theirs.hit(item, "key", "billing")
            reference.append((allowed, None if allowed else (
                await theirs.get_window_stats(item, "key", "billing")).reset_time - now[0]))
            allowed = ours.hit(item, "key/billing")
            mine.append((allowed, None if allowed else ours.retry_after_s(item, "key/billing")))
        return mine, reference

    mine, reference = asyncio.run(run())
    assert [allowed for allowed, _ in mine] == [allowed for allowed, _ in reference]
    # limits returns a reset time (now + seconds): equal up to the float rounding of `now`
    assert [wait for _, wait in mine] == [
        None if wait is None else pytest.approx(wait, abs=1e-6) for _, wait in reference]
    assert any(not allowed for allowed, _ in mine) and any(allowed for allowed, _ in mine)


def test_coalescer_sends_a_lone_caller_at_once_and_merges_callers_that_overlap() -> None:
    import asyncio

    from tritonkit.gateway.batcher import Coalescer

    sent: list[list[Any]] = []

    async def infer(rows: Any) -> list[Any]:
        sent.append(list(rows))
        await asyncio.sleep(0.01)
        return [(float(row["n"]), "low", "1") for row in rows]

    async def run() -> list[Any]:
        coalescer = Coalescer(infer, max_rows=64, max_wait_s=0.002, max_in_flight=1,
                              max_pending_rows=64)
        alone = await coalescer.submit([{"n": 0}])
        together = await asyncio.gather(*(coalescer.submit([{"n": n}]) for n in range(1, 9)))
        return [alone, *together]

    answers = asyncio.run(run())
    assert answers == [[(float(n), "low", "1")] for n in range(9)]
    assert sent[0] == [{"n": 0}] and sent[1] == [{"n": 1}]  # nobody waited: sent at once
    assert len(sent) < 9 and sorted(r["n"] for batch in sent for r in batch) == list(range(9))


def test_coalescer_gives_each_caller_its_own_answer_when_triton_refuses_one_of_them() -> None:
    import asyncio

    from tritonkit.gateway.batcher import Coalescer
    from tritonkit.gateway.upstream import UpstreamError

    async def infer(rows: Any) -> list[Any]:
        await asyncio.sleep(0.01)
        if any(row["bad"] for row in rows):
            raise UpstreamError("bad_request", "contract: unknown category")
        return [(0.5, "medium", "1") for _ in rows]

    async def run() -> list[Any]:
        coalescer = Coalescer(infer, max_rows=64, max_wait_s=0.002, max_in_flight=1,
                              max_pending_rows=64)
        return await asyncio.gather(
            *(coalescer.submit([{"bad": n == 3}]) for n in range(6)), return_exceptions=True)

    answers = asyncio.run(run())
    assert isinstance(answers[3], UpstreamError) and answers[3].kind == "bad_request"
    assert all(a == [(0.5, "medium", "1")] for n, a in enumerate(answers) if n != 3)


@pytest.mark.parametrize(("behaviour", "kind", "message"), [
    ("hang", "timeout", "Deadline Exceeded"),
    ("invalid", "bad_request", "unknown category"),
    ("unavailable", "unavailable", "model not ready"),
    ("internal", "server", "stub died"),
    ("empty", "server", "lacks the contract's outputs"),
])
def test_upstream_over_grpc_maps_a_status_to_its_kind_when_triton_fails(
        customers: list[dict[str, Any]], behaviour: str, kind: str, message: str) -> None:
    import asyncio

    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    from tritonkit.client.breaker import CircuitBreaker
    from tritonkit.gateway.upstream import TritonUpstream, UpstreamError

    class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
        async def ModelInfer(self, request: Any, context: Any) -> Any:  # the RPC's name
            if behaviour == "hang":
                await asyncio.sleep(30)
            codes = {"invalid": grpc.StatusCode.INVALID_ARGUMENT,
                     "unavailable": grpc.StatusCode.UNAVAILABLE,
                     "internal": grpc.StatusCode.INTERNAL}
            texts = {"invalid": "contract: unknown category", "unavailable": "model not ready",
                     "internal": "stub died"}
            if behaviour in codes:
                await context.abort(codes[behaviour], texts[behaviour])
            return service_pb2.ModelInferResponse(model_name="churn")

    async def run() -> UpstreamError:
        server = grpc.aio.server()
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        upstream = TritonUpstream(f"127.0.0.1:{port}", "grpc", timeout_s=0.3,
                                  breaker=CircuitBreaker())
        try:
            await upstream.infer(_rows(customers, 1))
        except UpstreamError as exc:
            return exc
        finally:
            await upstream.close()
            await server.stop(grace=None)
        raise AssertionError("no error")

    error = asyncio.run(run())
    assert error.kind == kind and message in error.message


def test_the_banners_example_requests_pass_the_gateway_and_the_step_when_built(
    artifacts: TabularArtifacts, schema: FeatureSchema,
) -> None:
    """`make up` prints a curl for /predict and one for Triton, both from churn's first
    held-out customer: each must be a request that is answered, not refused."""
    from tritonkit.serve.cli import _example_body
    from tritonkit.serve.stack import predict_example

    models = ContractModels.build(schema, max_batch=256)
    models.predict.model_validate_json(json.dumps(predict_example()))
    inputs = json.loads(_example_body())["inputs"]
    columns = {i["name"]: np.array(i["data"]) for i in inputs}
    assert schema.validate(columns) == []
