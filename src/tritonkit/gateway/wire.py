"""The packed churn entry point's tensors on the wire, without tritonclient's per-call objects.

The gateway calls `churn_packed`, the same model as the 19-input `churn` with the customers in
two tensors (docs/contract.md, "The packed entry point"): tritonserver and the python backend
spend per tensor, and on the development machine the packed entry point made 13.6x the naive
server at c=64 against 7.6x for the 19 tensors. KServe v2 carries each input as raw
little-endian bytes: `numeric` FP32 [rows, 4] packed row by row, `categorical` BYTES
[rows, 15] as 4-byte length-prefixed strings, the columns in the order of churn's contract
(`tritonkit.tabular.contract`). This module turns
validated customer rows into those two byte strings and back from the 3 outputs, and wraps them
in a gRPC `ModelInferRequest` (built from a cached template per row count through Triton's own
protobuf schema) or an HTTP body in the binary-tensor extension (a JSON header, then the bytes)::

    request = grpc_request([row, row])             # service_pb2.ModelInferRequest
    body, header_length = http_request([row])      # POST /v2/models/churn_packed/infer
    request = grpc_request([row], version="2")     # version 2 of it, explicitly
    answers = grpc_answers(response, rows=2)       # [(0.42, "medium", "1"), ...]

Profiled under load (docs/gateway.md, "Cost"): building 19 tritonclient `InferInput` objects
cost 160 µs for one customer; this costs a few µs.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from tritonclient.grpc import service_pb2

from tritonkit.gateway.errors import MalformedAnswer
from tritonkit.repository.layout import step_names
from tritonkit.repository.step_contract import PROBE_PARAMETER
from tritonkit.tabular.contract import contract
from tritonkit.tabular.packed import PACKED_CATEGORICAL, PACKED_DTYPES, PACKED_NUMERIC
from tritonkit.tabular.schema import KSERVE_DATATYPES

#: `/predict`'s model: churn, its contract read from the spec.
CHURN = contract("churn")
PACKED_COLUMNS = CHURN.packed
OUTPUT_DTYPES = CHURN.outputs
MODEL_NAME = step_names(CHURN.model)["packed"]
Answer = tuple[float, str, str]  # (the probability, risk_level, model_version)
#: (name, KServe datatype, columns) of each input, in the entry point's order.
INPUTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (PACKED_NUMERIC, KSERVE_DATATYPES[PACKED_DTYPES[PACKED_NUMERIC]], PACKED_COLUMNS.numeric),
    (PACKED_CATEGORICAL, KSERVE_DATATYPES[PACKED_DTYPES[PACKED_CATEGORICAL]],
     PACKED_COLUMNS.categorical),
)
_LENGTH = struct.Struct("<I")
#: Length-prefixed bytes of the strings seen so far (the trained categories: a few dozen).
_PREFIXED: dict[str, bytes] = {}
_PREFIXED_MAX = 4096


def _prefixed(value: Any) -> bytes:
    """A BYTES element: its UTF-8 length as uint32 little-endian, then the bytes."""
    found = _PREFIXED.get(value)
    if found is None:
        text = str(value).encode()
        found = _LENGTH.pack(len(text)) + text
        if len(_PREFIXED) < _PREFIXED_MAX:
            _PREFIXED[value] = found
    return found


def raw_inputs(rows: Sequence[Mapping[str, Any]]) -> list[bytes]:
    """The two inputs of `rows` as raw KServe bytes: `numeric` then `categorical`, each row by
    row in PACKED_COLUMNS' order (whole-number features travel as FP32)."""
    numeric, categorical = PACKED_COLUMNS.numeric, PACKED_COLUMNS.categorical
    return [
        struct.pack(f"<{len(rows) * len(numeric)}f",
                    *[row[name] for row in rows for name in numeric]),
        b"".join([_prefixed(row[name]) for row in rows for name in categorical]),
    ]


# -- gRPC -------------------------------------------------------------------------------------
_GRPC_TEMPLATES: dict[tuple[int, str, bool], bytes] = {}
_GRPC_TEMPLATES_MAX = 4096


def _grpc_template(size: int, version: str, probe: bool) -> bytes:
    """The serialized request without its raw contents, for `size` rows of a version (""
    for the one Triton picks) (cached)."""
    key = (size, version, probe)
    found = _GRPC_TEMPLATES.get(key)
    if found is None:
        request = service_pb2.ModelInferRequest(model_name=MODEL_NAME, model_version=version)
        for name, datatype, columns in INPUTS:
            request.inputs.add(name=name, datatype=datatype, shape=[size, len(columns)])
        for name in OUTPUT_DTYPES:
            request.outputs.add(name=name)
        if probe:
            request.parameters[PROBE_PARAMETER].bool_param = True
        found = request.SerializeToString()
        if len(_GRPC_TEMPLATES) < _GRPC_TEMPLATES_MAX:
            _GRPC_TEMPLATES[key] = found
    return found


def grpc_request(rows: Sequence[Mapping[str, Any]], version: str | None = None, *,
                 probe: bool = False) -> service_pb2.ModelInferRequest:
    """A `ModelInferRequest` for the entry point (a version of it, or the one Triton picks)
    with the rows as raw_input_contents; a health probe carries `PROBE_PARAMETER`."""
    request = service_pb2.ModelInferRequest.FromString(
        _grpc_template(len(rows), version or "", probe))
    request.raw_input_contents.extend(raw_inputs(rows))
    return request


def grpc_answers(response: service_pb2.ModelInferResponse, rows: int) -> list[Answer]:
    """The answers in a `ModelInferResponse` (one per row, in order)."""
    raw = dict(zip([output.name for output in response.outputs],
                   response.raw_output_contents, strict=False))
    return _answers(raw, rows)


# -- HTTP (binary-tensor extension) -----------------------------------------------------------
_OUTPUTS_JSON = [{"name": name, "parameters": {"binary_data": True}} for name in OUTPUT_DTYPES]
#: The HTTP header that gives the length of the JSON part of a binary-tensor body.
HEADER_LENGTH = "inference-header-content-length"


def http_request(rows: Sequence[Mapping[str, Any]], *, probe: bool = False
                 ) -> tuple[bytes, int]:
    """(body, length of its JSON header) of a binary-tensor inference request; a health probe
    carries `PROBE_PARAMETER` (its rows are counted in no drift series)."""
    size = len(rows)
    raw = raw_inputs(rows)
    request: dict[str, Any] = {
        "inputs": [{"name": name, "datatype": datatype, "shape": [size, len(columns)],
                    "parameters": {"binary_data_size": len(data)}}
                   for (name, datatype, columns), data in zip(INPUTS, raw, strict=True)],
        "outputs": _OUTPUTS_JSON,
    }
    if probe:
        request["parameters"] = {PROBE_PARAMETER: True}
    header = orjson.dumps(request)
    return b"".join([header, *raw]), len(header)


def http_answers(body: bytes, header_length: int | None, rows: int) -> list[Answer]:
    """The answers in a binary-tensor response body (`header_length`: its JSON part)."""
    try:
        header = orjson.loads(body if header_length is None else body[:header_length])
        raw: dict[str, bytes] = {}
        offset = len(body) if header_length is None else header_length
        for output in header["outputs"]:
            size = output.get("parameters", {}).get("binary_data_size")
            if size is None:
                raise MalformedAnswer(f"output {output.get('name')!r} came back as JSON, "
                                      "not binary")
            raw[output["name"]] = body[offset:offset + size]
            offset += size
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise MalformedAnswer(f"Triton's answer is not a KServe v2 response: {exc}") from exc
    return _answers(raw, rows)


def _answers(raw: Mapping[str, bytes], rows: int) -> list[Answer]:
    try:
        probabilities = struct.unpack(f"<{rows}f", raw[CHURN.probability])
        risks = _strings(raw["risk_level"])
        versions = _strings(raw["model_version"])
    except (KeyError, struct.error, UnicodeDecodeError) as exc:
        raise MalformedAnswer(f"Triton's answer lacks the contract's outputs for {rows} "
                              f"row(s): {exc!r}") from exc
    if not len(risks) == len(versions) == rows:
        raise MalformedAnswer(f"Triton answered {len(risks)} risk levels and {len(versions)} "
                              f"versions for {rows} row(s)")
    return list(zip(probabilities, risks, versions, strict=True))


def _strings(data: bytes) -> list[str]:
    """A BYTES tensor's elements, decoded."""
    out = []
    offset = 0
    end = len(data)
    while offset < end:
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += 4
        if offset + length > end:
            raise struct.error("a BYTES element runs past the end of its tensor")
        out.append(data[offset:offset + length].decode())
        offset += length
    return out
