"""An onnxruntime session on the CPU for a python step that runs an ONNX graph itself.

Only the embedded target needs it: tritonserver from the wheel has no onnxruntime backend, so
its steps call onnxruntime in the python backend. The builder copies this file beside those
steps alone; no step of the production target imports it (the image's requirements file has no
onnxruntime: Triton's own backend runs the graphs there)::

    session = cpu_session(os.path.join(here, "model.onnx"), intra_op_threads=1)
"""

import onnxruntime as ort


def cpu_session(path, intra_op_threads=1):
    """A CPU session for the graph at `path`: one instance is one process, so its parallelism
    is the instance count, and extra threads per session would only fight over the cores."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
