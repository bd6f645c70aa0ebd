"""Triton python-backend step that runs an ONNX model with onnxruntime (the embedded target).

On the production target Triton's native onnxruntime backend serves the same `model.onnx`; here
the wheel has only the python backend, so this step stands in for it. The repository builder
copies this file as `<model>/1/model.py` beside `model.onnx` and `onnx_session.py`. Inputs and
outputs are read from the model's config, so the step serves any ONNX model; a dynamic batch
of requests runs as one onnxruntime call; if that call raises, each request runs alone and
only those that still fail get an error (HTTP 500, with onnxruntime's message).
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from onnx_session import cpu_session
from step_errors import answer_probes_apart, describe, error, log_error

try:  # the drift publisher and its files are beside the step when the spec turns metrics on
    from drift_publisher import DriftPublisher
except ImportError:
    DriftPublisher = None


class TritonPythonModel:
    def initialize(self, args):
        self.model_name = args["model_name"]
        config = json.loads(args["model_config"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        params = config.get("parameters", {})
        threads = int(params.get("intra_op_num_threads", {}).get("string_value", "1"))
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = cpu_session(path, threads)
        # Where the model answers the head's outputs (the probability first), count them for
        # drift monitoring.
        self.drift = None
        if DriftPublisher is not None and "risk_level" in self.outputs:
            here = os.path.join(args["model_repository"], args["model_version"])
            self.drift = DriftPublisher.start(here, args)
            self.probability_output = 0
            self.risk_output = self.outputs.index("risk_level")

    def finalize(self):
        if self.drift is not None:
            self.drift.stop()

    def execute(self, requests):
        """One onnxruntime call for the batch; if it raises, each request runs alone."""
        self.counting = self.drift is not None and self.drift.counting(len(requests))
        responses = [None] * len(requests)
        good = []  # (request index, its input arrays)
        for i, request in enumerate(requests):
            try:
                arrays = [pb_utils.get_input_tensor_by_name(request, n).as_numpy()
                          for n in self.inputs]
            except Exception as exc:  # a missing input or a tensor the stub cannot convert
                responses[i] = pb_utils.InferenceResponse(
                    error=error(f"could not read the inputs: {describe(exc)}"))
            else:
                good.append((i, arrays))
        answer_probes_apart(self, good, requests, responses)
        return responses

    def _answer(self, good, responses):
        """Run the requests `good` as one onnxruntime call; fill their responses."""
        feeds = {
            name: good[0][1][j] if len(good) == 1
            else np.concatenate([arrays[j] for _, arrays in good])
            for j, name in enumerate(self.inputs)
        }
        results = self.session.run(self.outputs, feeds)
        if self.counting:
            self.drift.counter.count_predictions(results[self.probability_output],
                                                 results[self.risk_output])
        start = 0
        for i, arrays in good:
            stop = start + arrays[0].shape[0]
            responses[i] = pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(name, values[start:stop])
                for name, values in zip(self.outputs, results, strict=True)
            ])
            start = stop

    def _fail(self, index, exc, responses):
        message = f"{self.model_name}: onnxruntime failed on this request: {describe(exc)}"
        log_error(message)
        responses[index] = pb_utils.InferenceResponse(error=error(message, "INTERNAL"))
