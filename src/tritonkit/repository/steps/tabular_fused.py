"""Triton python-backend step of a fused target (embedded): the tabular preprocess step with the
served graph inside, one python hop instead of two.

The builder copies this file as `<model>/<version>/model.py`, the preprocess step beside it as
`tabular_preprocess.py` (with its features, schema and drift files), `onnx_session.py` and
`model.onnx` (the served variant with the postprocessing head appended). It validates and
encodes a dynamic batch as the preprocess step does, runs the graph on the encoded matrix and
returns the graph's outputs (the probability, risk_level, model_version).
"""

import os

from onnx_session import cpu_session
from tabular_preprocess import TritonPythonModel as PreprocessStep


class TritonPythonModel(PreprocessStep):
    def load_graph(self, here):
        return cpu_session(os.path.join(here, "model.onnx"))
