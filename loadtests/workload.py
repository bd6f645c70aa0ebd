"""What the load tests send: real held-out rows, and optional drifted and invalid ones.

Every ensemble the repository serves (`configs/models.yaml`) gets its requests from the source
of its family (`SOURCES`): a tabular classifier's held-out rows are
`artifacts/<model>/<version>/test.csv`, a text embedding's its evaluation texts. No Locust
here, so it imports anywhere::

    workload = Workload.build(None, Mix(drift_share=0.1, invalid_share=0.05))
    payload = workload.pick(random.Random(0))
    payload.name, payload.refused, payload.json_body, payload.binary_body, payload.grpc_inputs
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc
import tritonclient.http

from tritonkit.client.customers import DEFAULT_MODEL, columns_from_rows, read_customers
from tritonkit.errors import TritonKitError
from tritonkit.paths import ARTIFACTS
from tritonkit.spec import Spec, TabularClassifier, load_spec
from tritonkit.tabular.contract import TabularContract
from tritonkit.tabular.schema import KSERVE_DATATYPES

#: Kinds of request, and what each adds to the request name in Locust's statistics.
VALID, DRIFTED, UNSEEN, INVALID = "valid", "drifted", "unseen category", "invalid"
NAME_SUFFIXES = {
    VALID: "",
    DRIFTED: " [drifted]",
    UNSEEN: " [unseen category, expect 400]",
    INVALID: " [invalid, expect 400]",
}
#: A drifted row's first numeric feature moves up by this share of its range in the held-out
#: rows (churn: tenure 0-72 months, +36), within the feature's bounds.
DRIFT_SHIFT_OF_RANGE = 0.5
#: Half the drifted traffic also carries something no training row had: a category no one
#: saw in its first categorical feature, or (a model without any) a number past its bounds.
UNSEEN_CATEGORY = "Unseen"
UNSEEN_FRACTION_OF_DRIFT = 0.5


class LoadTestError(TritonKitError):
    """The load test cannot start: a bad option or missing held-out rows (the message says)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Payload:
    """One request of one kind for one ensemble, in every format the users send.

    The bodies are built on first use (`Workload.prepare` builds them before the load starts).
    """

    ensemble: str
    kind: str
    customer_id: str
    #: Input name -> array of shape [1, 1] in the ensemble's numpy dtype.
    columns: Mapping[str, np.ndarray]
    #: Input name -> KServe v2 datatype (FP32, INT32, BYTES, ...).
    datatypes: Mapping[str, str]
    outputs: tuple[str, ...]

    @property
    def name(self) -> str:
        """The request name in Locust's statistics, e.g. `churn [invalid, expect 400]`."""
        return self.ensemble + NAME_SUFFIXES[self.kind]

    @property
    def refused(self) -> bool:
        """Whether the server must refuse this request as a bad request (HTTP 400)."""
        return self.kind in (UNSEEN, INVALID)

    @property
    def features(self) -> dict[str, Any]:
        """The raw values as JSON types (the public gateway's `features`)."""
        return {name: _plain(array.reshape(-1)[0]) for name, array in self.columns.items()}

    @functools.cached_property
    def json_body(self) -> bytes:
        """A KServe v2 JSON request body (NaN is written as the literal Triton accepts)."""
        inputs = [
            {"name": name, "shape": list(array.shape), "datatype": self.datatypes[name],
             "data": [_plain(v) for v in array.reshape(-1)]}
            for name, array in self.columns.items()
        ]
        return json.dumps({"inputs": inputs}, separators=(",", ":")).encode()

    @functools.cached_property
    def _binary(self) -> tuple[bytes, int]:
        inputs = []
        for name, array in self.columns.items():
            item = tritonclient.http.InferInput(name, list(array.shape), self.datatypes[name])
            item.set_data_from_numpy(array, binary_data=True)
            inputs.append(item)
        outputs = [tritonclient.http.InferRequestedOutput(n, binary_data=True)
                   for n in self.outputs]
        body, json_size = tritonclient.http.InferenceServerClient.generate_request_body(
            inputs, outputs=outputs)
        return bytes(body), int(json_size) if json_size is not None else len(body)

    @property
    def binary_body(self) -> bytes:
        """A request body with the binary tensor extension: a JSON header, then raw tensors."""
        return self._binary[0]

    @property
    def binary_header_length(self) -> int:
        """The length of the JSON header of `binary_body` (`Inference-Header-Content-Length`)."""
        return self._binary[1]

    @functools.cached_property
    def grpc_inputs(self) -> list[tritonclient.grpc.InferInput]:
        """tritonclient gRPC inputs, built once and reused by every call."""
        inputs = []
        for name, array in self.columns.items():
            item = tritonclient.grpc.InferInput(name, list(array.shape), self.datatypes[name])
            item.set_data_from_numpy(array)
            inputs.append(item)
        return inputs

    @functools.cached_property
    def gateway_body(self) -> bytes:
        """A body for the public gateway's `POST /predict`."""
        return json.dumps({"customer_id": self.customer_id, "features": self.features},
                          separators=(",", ":")).encode()


def _plain(value: Any) -> Any:
    """A tensor element as a JSON value: a float32 by its shortest repr (70.35, not
    70.3499984741211), which parses back to the same float32."""
    if isinstance(value, np.floating):
        return float(str(value))
    if isinstance(value, np.integer):
        return int(value)
    return value.decode() if isinstance(value, bytes) else value


@dataclasses.dataclass(frozen=True, kw_only=True)
class Mix:
    """Shares of the traffic that are drifted and invalid; the rest are held-out rows as they
    are. Half the drifted share carries an unseen category, which the server refuses."""

    drift_share: float = 0.0
    invalid_share: float = 0.0

    def __post_init__(self) -> None:
        for option, share in (("--drift-share", self.drift_share),
                              ("--invalid-share", self.invalid_share)):
            if not (math.isfinite(share) and 0.0 <= share <= 1.0):
                raise LoadTestError(f"{option} must be a share between 0 and 1, not {share}")
        if self.drift_share + self.invalid_share > 1.0:
            raise LoadTestError(
                f"--drift-share {self.drift_share} and --invalid-share {self.invalid_share} add "
                "up to more than 1: lower one of them")

    def kind(self, rng: random.Random) -> str:
        draw = rng.random()
        if draw < self.invalid_share:
            return INVALID
        if draw < self.invalid_share + self.drift_share:
            unseen = draw < self.invalid_share + self.drift_share * UNSEEN_FRACTION_OF_DRIFT
            return UNSEEN if unseen else DRIFTED
        return VALID


#: Payloads of every kind for one ensemble: (its name, its spec, a rows file or None) -> kinds.
Source = Callable[[str, Any, Path | None], dict[str, list[Payload]]]


def tabular_payloads(name: str, model: TabularClassifier, rows_file: Path | None
                     ) -> dict[str, list[Payload]]:
    """A tabular classifier's requests, one row each, from its held-out test rows (or, for
    `/predict`'s model, `rows_file`: a CSV or JSON file of rows with its features).

    Drifted: the first numeric feature up by DRIFT_SHIFT_OF_RANGE of its range (answered);
    unseen: drifted and an unseen category (refused); invalid: a NaN or a negative number in
    the first numeric feature (refused).
    """
    contract = TabularContract.of(name, model)
    rows_file = rows_file if name == DEFAULT_MODEL else None
    # TabularArtifacts.for_version(v).test_rows, spelled out: tritonkit.tabular.artifacts imports
    # onnxruntime, whose threads make Locust's worker processes (--processes) abort at exit.
    path = rows_file or ARTIFACTS / name / str(model.version) / "test.csv"
    if rows_file is not None and not path.exists():
        raise LoadTestError(f"--customers {path}: no such file")
    if not path.exists():
        raise LoadTestError(f"no held-out rows at {path}: run `make build-engines`, or pass "
                            f"--customers with a CSV or JSON file of {name}'s features")
    rows = read_customers(path, contract=contract)
    if not rows:
        raise LoadTestError(f"{path} holds no rows")
    columns = columns_from_rows(rows, contract=contract)
    datatypes = {n: KSERVE_DATATYPES[t] for n, t in contract.triton_dtypes.items()}
    ids = [str(row.get(contract.id_column) or f"row-{i}") for i, row in enumerate(rows)]
    moved = contract.numeric[0]
    low, high = contract.bounds[moved]
    limit = math.inf if high is None else high
    held_out = columns[moved].astype(np.float64)
    shift = DRIFT_SHIFT_OF_RANGE * float(held_out.max() - held_out.min())

    def payload(kind: str, index: int, **changes: Any) -> Payload:
        one = {n: np.ascontiguousarray(columns[n][index:index + 1]) for n in contract.features}
        for feature, value in changes.items():
            one[feature] = np.array([[value]], dtype=one[feature].dtype)
        return Payload(ensemble=name, kind=kind, customer_id=ids[index], columns=one,
                       datatypes=datatypes, outputs=tuple(contract.outputs))

    def shifted(index: int) -> float:
        return min(float(held_out[index, 0]) + shift, limit)

    if contract.categorical:
        unseen: dict[str, Any] = {contract.categorical[0]: UNSEEN_CATEGORY.encode()}
    else:
        unseen = {moved: (limit if high is not None else 0.0) * 2 + 1.0}
    indices = range(len(rows))
    return {
        VALID: [payload(VALID, i) for i in indices],
        DRIFTED: [payload(DRIFTED, i, **{moved: shifted(i)}) for i in indices],
        UNSEEN: [payload(UNSEEN, i, **{moved: shifted(i), **unseen}) for i in indices],
        INVALID: [payload(INVALID, i, **{moved: math.nan if i % 2 == 0 else low - 5.0})
                  for i in indices],
    }


def text_payloads(name: str, model: Any, texts: Path | None) -> dict[str, list[Payload]]:
    """A text-embedding ensemble's requests, one text each, from its held-out evaluation texts
    (`make build-engines` writes them beside the model).

    Drifted: the words of a text in reverse order (answered); for texts the refused kinds are
    bytes that are not UTF-8 (counted as "unseen category") and an empty text (invalid).
    """
    # --customers names a rows file; a .txt file (one text a line) is taken as the texts
    if texts is None or texts.suffix != ".txt":
        texts = None
    path = texts or ARTIFACTS / name / str(model.version) / "texts" / "evaluation.txt"
    if not path.exists():
        raise LoadTestError(f"no held-out texts at {path}: run `make build-engines`")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise LoadTestError(f"{path} holds no texts")

    def payload(kind: str, index: int, value: bytes) -> Payload:
        return Payload(ensemble=name, kind=kind, customer_id=f"text-{index}",
                       columns={"text": np.array([[value]], dtype=object)},
                       datatypes={"text": "BYTES"}, outputs=("embedding",))

    indices = range(len(lines))
    return {
        VALID: [payload(VALID, i, lines[i].encode()) for i in indices],
        DRIFTED: [payload(DRIFTED, i, " ".join(reversed(lines[i].split())).encode())
                  for i in indices],
        UNSEEN: [payload(UNSEEN, i, b"\xff\xfe" + lines[i].encode()[:20]) for i in indices],
        INVALID: [payload(INVALID, i, b"") for i in indices],
    }


#: Family -> the source of requests of its ensembles.
SOURCES: dict[str, Source] = {"tabular_classifier": tabular_payloads,
                              "text_embedding": text_payloads}


@dataclasses.dataclass(frozen=True)
class Workload:
    """The requests of a load test: for each ensemble, payloads of each kind, and the mix."""

    payloads: Mapping[str, Mapping[str, Sequence[Payload]]]
    mix: Mix

    @classmethod
    def build(cls, ensembles: Sequence[str] | None, mix: Mix, customers: Path | None = None,
              spec: Spec | None = None) -> Workload:
        """Read the held-out rows of each ensemble (default: every one in the spec).

        Raises:
            LoadTestError: an ensemble the spec does not serve or that has no source here,
                or held-out rows that cannot be read.
        """
        spec = spec or load_spec()
        served = list(spec.models)
        names = list(ensembles) if ensembles else served
        for name in names:
            if name not in spec.models:
                raise LoadTestError(f"ensemble {name!r} is not in configs/models.yaml, which "
                                    f"serves: {', '.join(served)}")
            if spec.models[name].family not in SOURCES:
                raise LoadTestError(f"ensemble {name!r} has no source of requests: add one for "
                                    "its family to SOURCES in loadtests/workload.py")
        try:
            payloads = {name: SOURCES[spec.models[name].family](name, spec.models[name],
                                                                 customers)
                        for name in names}
        except LoadTestError:
            raise
        except TritonKitError as exc:  # a customers file that cannot be read, say
            raise LoadTestError(str(exc)) from exc
        return cls(payloads=payloads, mix=mix)

    @property
    def ensembles(self) -> tuple[str, ...]:
        return tuple(self.payloads)

    def pick(self, rng: random.Random, ensemble: str | None = None) -> Payload:
        """A kind drawn by the mix, and a random customer of that kind, for `ensemble` or a
        random one of the workload's ensembles."""
        if ensemble is None:
            ensemble = self.ensembles[0] if len(self.payloads) == 1 else rng.choice(self.ensembles)
        elif ensemble not in self.payloads:
            raise LoadTestError(f"ensemble {ensemble!r} is not in this load test's --ensembles "
                                f"({', '.join(self.ensembles)})")
        return rng.choice(self.payloads[ensemble][self.mix.kind(rng)])

    def prepare(self, formats: Sequence[str], pause: Callable[[], object] | None = None,
                every: int = 32) -> int:
        """Build the bodies in `formats` (attributes of Payload: `json_body`, `binary_body`,
        `grpc_inputs`, `gateway_body`) of every payload the mix can pick, so that no user
        builds one while others wait on the network.

        Args:
            formats: the Payload attributes to build.
            pause: called after every `every` payloads: under gevent, a yield that lets a
                Locust worker's heartbeat through (building takes seconds on a busy machine).
            every: payloads built between two pauses.

        Returns:
            How many payloads it prepared.
        """
        kinds = {VALID: 1.0 - self.mix.drift_share - self.mix.invalid_share,
                 DRIFTED: self.mix.drift_share, UNSEEN: self.mix.drift_share,
                 INVALID: self.mix.invalid_share}
        count = 0
        for by_kind in self.payloads.values():
            for kind, payloads in by_kind.items():
                if kinds[kind] <= 0.0:
                    continue
                for payload in payloads:
                    for attribute in formats:
                        getattr(payload, attribute)
                    count += 1
                    if pause is not None and count % every == 0:
                        pause()
        return count
