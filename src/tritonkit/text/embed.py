"""In-process embeddings with onnxruntime: the reference that served answers are checked against.

`OnnxEmbedder` runs an exported graph (any variant) on token ids; `TextEmbedder` adds the
serving tokenizer, so a text goes through the same steps as in Triton::

    embedder = TextEmbedder.load(artifacts.variant("fp32"), artifacts.tokenizer, max_length=128)
    vectors = embedder.embed(["How do I open a file?", "A for loop iterates."])  # [2, 384]
    cosine(vectors, served)                                                      # per text
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from tritonkit.text.tokenizer import TextTokenizer, check_texts

logger = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "embedding"


class OnnxEmbedder:
    """An onnxruntime session of an embedding graph (CPU, `threads` intra-op threads)."""

    def __init__(self, path: Path, *, threads: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # its warnings about unused initializers are noise here
        self.path = path
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Embeddings [batch, dim] (float32) of int64 ids and mask [batch, sequence]."""
        feeds = {INPUT_NAMES[0]: np.asarray(input_ids, dtype=np.int64),
                 INPUT_NAMES[1]: np.asarray(attention_mask, dtype=np.int64)}
        out = self.session.run([OUTPUT_NAME], feeds)[0]
        return np.asarray(out, dtype=np.float32)


class TextEmbedder:
    """Texts -> serving tokenizer -> ONNX graph, in batches."""

    def __init__(self, model: OnnxEmbedder, tokenizer: TextTokenizer, max_length: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def load(cls, onnx_path: Path, tokenizer_path: Path, *, max_length: int,
             threads: int = 1) -> TextEmbedder:
        return cls(OnnxEmbedder(onnx_path, threads=threads),
                   TextTokenizer.from_file(tokenizer_path), max_length)

    def embed(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """One vector per text, [len(texts), dim]; raises TextError for a bad text."""
        checked = check_texts(texts)
        parts = []
        for start in range(0, len(checked), batch_size):
            ids, mask = self.tokenizer.encode(checked[start:start + batch_size], self.max_length)
            parts.append(self.model.run(ids, mask))
        return np.concatenate(parts)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [n, dim] arrays."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.asarray(np.sum(a * b, axis=1) / np.maximum(norms, 1e-12))
