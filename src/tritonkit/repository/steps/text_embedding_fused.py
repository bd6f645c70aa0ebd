"""Triton python-backend step of a fused target (embedded): the text step with the encoder
inside, so one python hop tokenizes and embeds a dynamic batch.

The builder copies this file as `<model>/<version>/model.py`, the text step beside it as
`text_embedding_step.py` (with `text_tokenizer.py` and `tokenizer.json`), `onnx_session.py` and
`model.onnx` (the served variant). It answers `embedding` for each request's texts, embedded in
groups of alike lengths (text_embedding.py).
"""

import os

from onnx_session import cpu_session
from text_embedding_step import TritonPythonModel as TextStep


class TritonPythonModel(TextStep):
    def load_graph(self, here, threads):
        return cpu_session(os.path.join(here, "model.onnx"), threads)
