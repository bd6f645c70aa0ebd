"""A client for a text-embedding ensemble (`minilm`) over HTTP or gRPC (tritonclient).

    client = EmbeddingClient("127.0.0.1:8000", protocol="http")
    vectors = client.embed(["How do I open a file?", "A for loop iterates."])   # [2, 384]
    client.close()

Texts are checked before anything is sent: a bad one raises `TextError` naming its row (empty,
not UTF-8, not a string). An unreachable server raises `ServerUnavailableError`, an error
answer `ServerError` (`bad_request` when the server blamed the input), each naming the URL
(`tritonkit.client.triton`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from tritonkit.client.triton import TritonClient, WireProtocol
from tritonkit.text.tokenizer import TextError, check_texts

__all__ = ["DEFAULT_MODEL", "MAX_ROWS_PER_REQUEST", "EmbeddingClient", "TextError"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "minilm"
INPUT = "text"
OUTPUT = "embedding"
#: Texts per request: the spec's max_batch_size of `minilm` (more is refused by Triton).
MAX_ROWS_PER_REQUEST = 64


class EmbeddingClient(TritonClient):
    """Calls the ensemble with `text` (BYTES [rows, 1]); one request per `batch_size` texts."""

    row_name = "text"
    script = "embed.py"

    def __init__(self, url: str, protocol: WireProtocol = "http", *, model: str = DEFAULT_MODEL,
                 timeout_s: float = 10.0, batch_size: int = MAX_ROWS_PER_REQUEST) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        super().__init__(url, protocol, timeout_s)
        self.model = model
        self.batch_size = batch_size

    def infer_array(self, array: np.ndarray, datatype: str = "BYTES") -> np.ndarray:
        """One request with `array` as `text`, unchecked; returns `embedding`.

        The raw call, for sending what `embed` would refuse (tests of the server's checks).

        Raises:
            tritonclient.utils.InferenceServerException: with the server's message.
        """
        outputs = self.send(self.model, [(INPUT, array, datatype)], [OUTPUT])
        return np.asarray(outputs[OUTPUT], dtype=np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised vector per text, [len(texts), dim].

        Raises:
            TextError: a text cannot be sent (its row is named); nothing was sent.
            ServerUnavailableError, ServerError: see the module docstring.
        """
        checked = check_texts(texts)
        parts = []
        for start in range(0, len(checked), self.batch_size):
            chunk = checked[start:start + self.batch_size]
            array = np.array([[t.encode("utf-8")] for t in chunk], dtype=np.object_)
            parts.append(self._infer(array, start))
        return np.concatenate(parts)

    def _infer(self, array: np.ndarray, start: int) -> np.ndarray:
        """`infer_array` with tritonclient's failures raised as this package's errors."""
        return self.call(lambda: self.infer_array(array), start, len(array))
