"""Triton python-backend step that runs an ONNX model with onnxruntime (the embedded target).

On the production target Triton's native onnxruntime backend serves the same `model.onnx`; here
the wheel has only the python backend, so this step stands in for it. The repository builder
copies this file as `<model>/1/model.py` beside `model.onnx`. Inputs and outputs are read from
the model's config, so the step serves any ONNX model; a dynamic batch of requests runs as one
onnxruntime call.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        params = config.get("parameters", {})
        threads = int(params.get("intra_op_num_threads", {}).get("string_value", "1"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        per_request = [
            [pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs]
            for r in requests
        ]
        feeds = {
            name: per_request[0][j] if len(requests) == 1
            else np.concatenate([arrays[j] for arrays in per_request])
            for j, name in enumerate(self.inputs)
        }
        try:
            results = self.session.run(self.outputs, feeds)
        except Exception as exc:  # onnxruntime raises its own error types
            error = pb_utils.TritonError(f"onnxruntime failed: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses = []
        start = 0
        for arrays in per_request:
            stop = start + arrays[0].shape[0]
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(name, values[start:stop])
                for name, values in zip(self.outputs, results, strict=True)
            ]))
            start = stop
        return responses
