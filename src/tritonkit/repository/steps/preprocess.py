"""Triton python-backend step: validate and encode the raw features of each request.

The repository builder copies this file as `<model>/1/model.py`, with `features.py`, `packed.py` and
`feature_schema.json` beside it (the step needs numpy alone). One `execute` call gets a dynamic
batch of requests: all rows are encoded and checked in one vectorised pass; a request holding a
bad row gets an INVALID_ARG error (HTTP 400) naming the feature and the problem, the others go
on. If the pass itself raises (onnxruntime, say), each request is run alone and only those that
still fail get an INTERNAL error (HTTP 500) with the exception's message.

Its output is the encoded `features` matrix. On a target that fuses python steps the builder
serves `tabular_fused.py` instead, which is this step with the graph inside (`load_graph`): it
runs `model.onnx` on the batch with onnxruntime and returns the graph's outputs, one python hop
instead of two. This file itself imports numpy alone (the production image's requirements).

Its inputs are the config's: one tensor per feature, or the packed pair `numeric` and
`categorical` (`packed.PACKED_*`), which tritonserver and the stub hand over for a fraction of
the cost of one per feature. A packed batch is unpacked into views of the same columns and
goes through the same checks, encoding, prediction and drift counts; a fraction in a
whole-number feature, which the per-feature contract refuses by its INT32 dtype, is refused by
value.
"""

import gc
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from features import FeatureSchema
from packed import (
    PACKED_CATEGORICAL,
    PACKED_NUMERIC,
    PackedColumns,
    fraction_problems,
    fractional_rows,
    packed_problems,
    unpack,
)
from step_errors import Refusals, answer_isolating, describe, error, is_probe, log_error

try:  # the drift publisher and its files are beside the step when the spec turns metrics on
    from drift_publisher import DriftPublisher
except ImportError:
    DriftPublisher = None


class TritonPythonModel:
    def initialize(self, args):
        self.model_name = args["model_name"]
        here = os.path.dirname(os.path.abspath(__file__))
        self.schema = FeatureSchema.load(os.path.join(here, "feature_schema.json"))
        self.names = self.schema.names
        self.first = self.names[0]
        config = json.loads(args["model_config"])
        self.outputs = [o["name"] for o in config["output"]]
        self.order = PackedColumns.of(self.schema)
        self.packed = {i["name"] for i in config["input"]} == set(self.order.tensors)
        # a model without features of a kind has no tensor of it: read as [rows, 0]
        self.absent = {PACKED_NUMERIC: np.float32, PACKED_CATEGORICAL: np.object_}
        for name in self.order.tensors:
            del self.absent[name]
        self.session = self.load_graph(here)

        self.drift = DriftPublisher.start(here, args) if DriftPublisher is not None else None
        self.refusals = Refusals(self.model_name)
        self.counting = False  # whether the current execute call's rows are counted
        self.minimum = np.array([f.minimum for f in self.schema.numeric])
        self.maximum = np.array(
            [np.inf if f.maximum is None else f.maximum for f in self.schema.numeric])
        self.integer_features = self.schema.integer_features
        if "risk_level" in self.outputs:  # the whole graph runs here: the probability is first
            self.probability_output = 0
            self.risk_output = self.outputs.index("risk_level")
        if self.drift is not None:
            names = [b.name for b in self.drift.counter.layout.numeric]
            names += [c.name for c in self.drift.counter.layout.categorical]
            if names != list(self.names):
                raise ValueError(f"reference profile features {names} differ from the schema's")

        # Every request allocates dozens of tensor objects; with the default thresholds the
        # cyclic GC ran constantly over the long-lived ones too. Freezing what initialize()
        # made and collecting gen 0 less often gave +6 % throughput and -1.5 ms p99 at
        # concurrency 64 (wrk, two A/B runs). The step makes few reference cycles.
        gc.freeze()
        gc.set_threshold(100_000, 50, 50)

    def load_graph(self, here):
        """The onnxruntime session of the graph this step runs after encoding: none here (the
        encoded matrix is the output); `tabular_fused.py` loads `model.onnx`."""
        return None

    def _rows(self, inputs):
        """Rows of one request's inputs (what `_read` made of them)."""
        return inputs[0].shape[0] if self.packed else inputs[self.first].shape[0]

    def finalize(self):
        if self.drift is not None:
            self.drift.stop()

    def _outputs(self, matrix):
        """The tensors this step returns for an encoded batch, by name."""
        if self.session is None:
            return [matrix]
        return self.session.run(self.outputs, {"features": matrix})

    def execute(self, requests):
        """Answer every request of a dynamic batch; one request's failure is its own alone.
        Health probes (`step_errors.is_probe`) are answered in a pass of their own that counts
        nothing for drift."""
        self.counting = self.drift is not None and self.drift.counting(len(requests))
        probes = [is_probe(r) for r in requests] if self.counting else None
        responses = [None] * len(requests)
        good = []  # (request index, its inputs: columns, or the (numeric, categorical) pair)
        for i, request in enumerate(requests):
            try:
                columns = {t.name(): t.as_numpy() for t in request.inputs()}
            except Exception as exc:  # a tensor the stub cannot hand over as numpy
                responses[i] = pb_utils.InferenceResponse(
                    error=error(f"could not read the inputs: {describe(exc)}"))
                continue
            inputs, problems, rows = self._read(columns)
            if problems:
                responses[i] = pb_utils.InferenceResponse(
                    error=error("; ".join(problems)))
                if self.counting and not probes[i]:
                    self.drift.counter.count_rejected("malformed_request", max(rows, 1))
            else:
                good.append((i, inputs))
        if probes is not None and any(probes[i] for i, _ in good):
            self._answer_all([item for item in good if not probes[item[0]]], responses)
            self.counting = False
            self._answer_all([item for item in good if probes[item[0]]], responses)
        else:
            self._answer_all(good, responses)
        self.refusals.count(responses)
        return responses

    def _answer_all(self, good, responses):
        """Answer `good` in one vectorised pass; if something in it breaks the pass
        (onnxruntime raised, a value encoding could not take), each request runs alone."""
        if good:
            answer_isolating(good, responses, self._answer,
                             lambda item, exc, responses: self._fail(
                                 item[0], exc, responses, self._rows(item[1])))

    def _read(self, columns):
        """(inputs, problems, rows) of one request's tensors by name; problems [] when its
        tensors are what the config says (shapes and dtypes: the values are checked in
        `_answer`)."""
        if self.packed:
            if set(columns) != set(self.order.tensors):
                names = ", ".join(sorted(columns))
                return None, [f"expected the inputs {' and '.join(self.order.tensors)}, "
                              f"got {names or 'none'}"], 0
            first = columns[self.order.tensors[0]]
            rows = first.shape[0] if first.ndim else 0
            for name, dtype in self.absent.items():
                columns[name] = np.empty((rows, 0), dtype=dtype)
            numeric, categorical = columns[PACKED_NUMERIC], columns[PACKED_CATEGORICAL]
            return (numeric, categorical), packed_problems(numeric, categorical, self.order), rows
        rows = columns[self.first].shape[0] if self.first in columns else 0
        if len(columns) != len(self.names) or rows == 0:
            return None, self.schema.validate(columns) or ["malformed request"], rows
        return columns, [], rows

    def _columns(self, good):
        """The per-feature columns of the requests `good`, concatenated."""
        if self.packed:
            if len(good) == 1:
                numeric, categorical = good[0][1]
            else:
                numeric = np.concatenate([inputs[0] for _, inputs in good])
                categorical = np.concatenate([inputs[1] for _, inputs in good])
            return unpack(numeric, categorical, self.order)
        if len(good) == 1:
            return good[0][1]
        return {n: np.concatenate([c[n] for _, c in good]) for n in self.names}

    def _problems(self, inputs):
        """Every problem of one request's values, each message naming its feature."""
        if not self.packed:
            return self.schema.validate(inputs)
        columns = unpack(*inputs, self.order)
        return self.schema.validate(columns) + fraction_problems(columns, self.integer_features)

    def _answer(self, good, responses):
        """Encode, check and predict the requests `good` in one pass; fill their responses."""
        batch = self._columns(good)
        encoded = self.schema.encode_batch(batch)
        matrix, bad = encoded.matrix, encoded.bad
        # whole-number features come as FP32 in the packed pair: a fraction is a bad row
        fractions = fractional_rows(batch, self.integer_features) if self.packed else None
        if fractions is not None:
            bad = bad | fractions
        results = self._outputs(matrix)
        start = 0
        answers = []
        for i, inputs in good:
            stop = start + self._rows(inputs)
            if bad[start:stop].any():
                problems = self._problems(inputs)
                answers.append((i, pb_utils.InferenceResponse(
                    error=error("; ".join(problems) or "invalid input"))))
            else:
                answers.append((i, pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor(name, values[start:stop])
                    for name, values in zip(self.outputs, results, strict=True)
                ])))
            start = stop
        # Responses and counts are set only once the whole pass succeeded: a retry starts
        # from scratch.
        for i, response in answers:
            responses[i] = response
        if self.counting:
            self._count(batch, encoded, results, bad, fractions)

    def _count(self, batch, encoded, results, bad, fractions):
        """Add a batch's inputs, refusals and answers to the drift counts (no metric calls).

        `bad` is `encoded.bad` and the rows of `fractions` (a fraction in a whole-number
        feature of a packed batch, counted as out of bounds; None when no row has one).
        """
        counter = self.drift.counter
        unknown = encoded.codes < 0
        blank = None
        if unknown.any():
            blank = np.zeros_like(unknown)
            for k, cat in enumerate(self.schema.categorical):
                if unknown[k].any():
                    values = batch[cat.name].reshape(-1)
                    blank[k] = [not (v.strip() if isinstance(v, (bytes, str)) else v)
                                for v in values]
        counter.count_features(encoded.numbers, encoded.codes, blank)
        if bad.any():
            numbers = encoded.numbers
            with np.errstate(invalid="ignore"):
                nan = np.isnan(numbers).any(axis=1)
                infinite = np.isinf(numbers).any(axis=1)
                outside = (np.isfinite(numbers)
                           & ((numbers < self.minimum) | (numbers > self.maximum))).any(axis=1)
            if fractions is not None:
                outside |= fractions
            blank_rows = blank.any(axis=0) if blank is not None else np.zeros_like(nan)
            unseen = (unknown & ~blank).any(axis=0) if blank is not None else unknown.any(axis=0)
            for reason, rows in (("unknown_category", unseen), ("missing_value", nan | blank_rows),
                                 ("non_finite", infinite), ("out_of_bounds", outside)):
                if rows.any():
                    counter.count_rejected(reason, int(np.count_nonzero(rows)))
        if self.session is not None:
            good = ~bad
            counter.count_predictions(results[self.probability_output][good],
                                      results[self.risk_output][good])

    def _fail(self, index, exc, responses, rows=1):
        if self.counting:
            self.drift.counter.count_rejected("internal_error", rows)
        message = f"{self.model_name} failed on this request: {describe(exc)}"
        log_error(message)
        responses[index] = pb_utils.InferenceResponse(error=error(message, "INTERNAL"))
