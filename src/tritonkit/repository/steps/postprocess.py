"""Triton python-backend step: the tabular model's head on the production target.

The GPU model (Triton's onnxruntime backend or a TensorRT engine) answers the probability
alone, since GPU providers have no string tensors; this step adds `risk_level` and
`model_version`, exactly as the ONNX head that the embedded graph carries
(`tabular.export.append_head`: `high` if p >= high, else `medium` if p >= medium, else `low`,
compared in FP32), and counts the predictions for drift monitoring. It needs numpy alone (the
production image's requirements): no onnxruntime for a string head.

The builder copies this file as `<model>/<version>/model.py` with `step_errors.py` (and the
drift files when metrics are on); the config's parameters carry the head: `risk_medium`,
`risk_high` and `model_version`. Its input is `<probability>_in` [rows, 1] FP32 (churn:
`churn_probability_in`), its outputs the probability, `risk_level` and `model_version`.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from step_errors import answer_probes_apart, describe, error, log_error

try:  # the drift publisher and its files are beside the step when the spec turns metrics on
    from drift_publisher import DriftPublisher
except ImportError:
    DriftPublisher = None

HEAD = ("risk_level", "model_version")


class TritonPythonModel:
    def initialize(self, args):
        self.model_name = args["model_name"]
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.medium = np.float32(float(params["risk_medium"]))
        self.high = np.float32(float(params["risk_high"]))
        self.version = params["model_version"].encode()
        names = tuple(o["name"] for o in config["output"])
        if len(names) != 3 or names[1:] != HEAD:
            raise ValueError(f"{self.model_name}: the head answers the probability and {HEAD}, "
                             f"the config asks for {names}")
        self.input = config["input"][0]["name"]
        self.output_names = names
        here = os.path.join(args["model_repository"], args["model_version"])
        self.drift = DriftPublisher.start(here, args) if DriftPublisher is not None else None

    def finalize(self):
        if self.drift is not None:
            self.drift.stop()

    def execute(self, requests):
        """One pass over the batch's probabilities; if it raises, each request runs alone."""
        self.counting = self.drift is not None and self.drift.counting(len(requests))
        responses = [None] * len(requests)
        good = []  # (request index, its probabilities [rows, 1])
        for i, request in enumerate(requests):
            try:
                good.append((i, pb_utils.get_input_tensor_by_name(request, self.input).as_numpy()))
            except Exception as exc:  # a missing input or a tensor the stub cannot convert
                responses[i] = pb_utils.InferenceResponse(
                    error=error(f"could not read the input {self.input!r}: {describe(exc)}"))
        answer_probes_apart(self, good, requests, responses)
        return responses

    def _answer(self, good, responses):
        probability = good[0][1] if len(good) == 1 else np.concatenate([p for _, p in good])
        probability = probability.astype(np.float32, copy=False)
        risk = np.where(probability >= self.high, b"high",
                        np.where(probability >= self.medium, b"medium", b"low")).astype(object)
        version = np.full(probability.shape, self.version, dtype=object)
        answers = []
        start = 0
        for i, rows in good:
            stop = start + rows.shape[0]
            answers.append((i, pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(name, values[start:stop]) for name, values in
                zip(self.output_names, (probability, risk, version), strict=True)])))
            start = stop
        for i, response in answers:
            responses[i] = response
        if self.counting:
            self.drift.counter.count_predictions(probability, risk)

    def _fail(self, index, exc, responses):
        message = f"{self.model_name} failed on this request: {describe(exc)}"
        log_error(message)
        responses[index] = pb_utils.InferenceResponse(error=error(message, "INTERNAL"))
