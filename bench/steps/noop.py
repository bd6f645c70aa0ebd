"""A python step that does no work, with the `churn` contract: the platform's ceiling.

It reads how many rows each request has (from its first input, as any step must) and answers
the three outputs of the contract with constant values, so what it costs is what tritonserver
and the python backend cost for 19 inputs and 3 outputs: the ceiling of any `churn` step.
The benchmark suite (bench/suite.py) serves it beside `churn`, alone and inside an ensemble.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.first = config["input"][0]["name"]
        self.outputs = [o["name"] for o in config["output"]]
        self.constants = {
            "churn_probability": np.zeros((1024, 1), dtype=np.float32),
            "risk_level": np.full((1024, 1), b"low", dtype=np.object_),
            "model_version": np.full((1024, 1), b"noop", dtype=np.object_),
        }

    def execute(self, requests):
        responses = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, self.first).as_numpy().shape[0]
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(name, self.constants[name][:rows]) for name in self.outputs]))
        return responses
