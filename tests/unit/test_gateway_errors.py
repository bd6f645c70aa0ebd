"""The gateway's errors: each a TritonKitError answered by `problem_reply` with its status, the
contract's body and Retry-After; a Triton failure's status decided by its kind alone."""

from __future__ import annotations

import json

import pytest

from tritonkit.errors import TritonKitError
from tritonkit.gateway.edge import _response
from tritonkit.gateway.errors import (
    ErrorKind,
    GatewayError,
    InvalidRequest,
    MalformedAnswer,
    QueueFull,
    RequestTimeout,
    TooLarge,
    Unavailable,
    UpstreamError,
    problem_reply,
)


def test_problem_reply_answers_a_too_large_body_413_with_its_problem_when_raised() -> None:
    reply = problem_reply(TooLarge(300_000, 262_144))

    assert reply.status == 413 and not reply.headers
    assert json.loads(reply.body) == {
        "error": "body_too_large",
        "message": "body of 300000 bytes is larger than the limit of 262144 bytes",
        "problems": [{"field": "body", "message": "body of 300000 bytes is larger than the "
                                                  "limit of 262144 bytes"}]}


@pytest.mark.parametrize(("kind", "status", "error", "retry_after"), [
    ("bad_request", 400, "invalid_request", None),
    ("server", 500, "upstream_error", None),
    ("unavailable", 503, "unavailable", "3"),
    ("timeout", 503, "unavailable", "3"),
    ("breaker_open", 503, "unavailable", "3"),
])
def test_upstream_error_is_answered_by_its_kind_when_no_fallback_answers(
        kind: ErrorKind, status: int, error: str, retry_after: str | None) -> None:
    exc = UpstreamError(kind, "Triton at 127.0.0.1:8000: no")
    exc.advise_retry(2.2)

    reply = problem_reply(exc)

    assert isinstance(exc, TritonKitError)
    assert (reply.status, json.loads(reply.body)["error"]) == (status, error)
    assert reply.headers.get("Retry-After") == retry_after


def test_upstream_bad_request_names_the_features_when_triton_refuses_the_input() -> None:
    body = json.loads(problem_reply(UpstreamError("bad_request", "unknown category")).body)

    assert body == {"error": "invalid_request", "message": "Triton refused the input",
                    "problems": [{"field": "features", "message": "unknown category"}]}


def test_malformed_answer_is_a_server_failure_of_triton_when_outputs_are_missing() -> None:
    exc = MalformedAnswer("Triton's answer lacks the contract's outputs")

    assert isinstance(exc, UpstreamError) and exc.kind == "server"
    assert problem_reply(exc).status == 500


def test_errors_carry_status_and_retry_after_when_given_or_overridden() -> None:
    assert problem_reply(QueueFull(512, 512)).headers == {"Retry-After": "1"}
    assert problem_reply(QueueFull(512, 512)).status == 503
    assert problem_reply(InvalidRequest.of_field("index", "no replica 7", 404)).status == 404
    assert problem_reply(GatewayError("boom")).status == 500
    assert json.loads(problem_reply(GatewayError("boom")).body)["error"] == "internal"


def test_edge_writes_the_same_body_as_raw_http_when_it_refuses_a_connection() -> None:
    raw = _response(Unavailable("full: retry shortly", retry_after_s=1))
    head, body = raw.split(b"\r\n\r\n", 1)

    assert head.split(b"\r\n") == [
        b"HTTP/1.1 503 Service Unavailable", b"content-type: application/json",
        b"content-length: %d" % len(body), b"connection: close", b"retry-after: 1"]
    assert body == problem_reply(Unavailable("full: retry shortly")).body
    assert _response(RequestTimeout("late")).startswith(b"HTTP/1.1 408 Request Timeout\r\n")
