"""A client for a text-embedding ensemble (`minilm`) over HTTP or gRPC (tritonclient).

    client = EmbeddingClient("127.0.0.1:8000", protocol="http")
    vectors = client.embed(["How do I open a file?", "A for loop iterates."])   # [2, 384]
    client.close()

Texts are checked before anything is sent: a bad one raises `TextError` naming its row (empty,
not UTF-8, not a string). An unreachable server raises `ServerUnavailableError`, an error
answer `ServerError` (`bad_request` when the server blamed the input), each naming the URL.
"""

from __future__ import annotations

import http.client
import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from tritonclient.utils import InferenceServerException

from tritonkit.errors import ServerError, ServerUnavailableError
from tritonkit.text.tokenizer import TextError, check_texts

__all__ = ["DEFAULT_MODEL", "MAX_ROWS_PER_REQUEST", "EmbeddingClient", "Protocol", "TextError"]

logger = logging.getLogger(__name__)

Protocol = Literal["http", "grpc"]
DEFAULT_MODEL = "minilm"
INPUT = "text"
OUTPUT = "embedding"
#: Texts per request: the spec's max_batch_size of `minilm` (more is refused by Triton).
MAX_ROWS_PER_REQUEST = 64
_BAD_REQUEST_STATUSES = frozenset({"400", "StatusCode.INVALID_ARGUMENT"})
_UNREACHABLE_STATUSES = frozenset({"StatusCode.UNAVAILABLE"})
_TIMEOUT_STATUSES = frozenset({"StatusCode.DEADLINE_EXCEEDED"})


class EmbeddingClient:
    """Calls the ensemble with `text` (BYTES [rows, 1]); one request per `batch_size` texts."""

    def __init__(self, url: str, protocol: Protocol = "http", *, model: str = DEFAULT_MODEL,
                 timeout_s: float = 10.0, batch_size: int = MAX_ROWS_PER_REQUEST) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.url = url
        self.protocol = protocol
        self.model = model
        self.timeout_s = timeout_s
        self.batch_size = batch_size
        if protocol == "http":
            import tritonclient.http as module
            self._client: Any = module.InferenceServerClient(
                url, connection_timeout=timeout_s, network_timeout=timeout_s)
        elif protocol == "grpc":
            import tritonclient.grpc as module
            self._client = module.InferenceServerClient(url)
        else:
            raise ValueError(f"protocol must be 'http' or 'grpc', not {protocol!r}")
        self._module = module

    def infer_array(self, array: np.ndarray, datatype: str = "BYTES") -> np.ndarray:
        """One request with `array` as `text`, unchecked; returns `embedding`.

        The raw call, for sending what `embed` would refuse (tests of the server's checks).

        Raises:
            tritonclient.utils.InferenceServerException: with the server's message.
        """
        item = self._module.InferInput(INPUT, list(array.shape), datatype)
        item.set_data_from_numpy(array)
        kwargs: dict[str, Any] = {"outputs": [self._module.InferRequestedOutput(OUTPUT)]}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout_s
        result = self._client.infer(self.model, [item], **kwargs)
        return np.asarray(result.as_numpy(OUTPUT), dtype=np.float32)

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
        where = f"Triton at {self.url} ({self.protocol})"
        hint = f"is `make up` running, and is {self.url} its {self.protocol} port?"
        slow = (f"{where} did not answer within {self.timeout_s:g} s: is it overloaded? "
                "raise the timeout (embed.py --timeout-s)")
        try:
            return self.infer_array(array)
        except TimeoutError as exc:  # http; a subclass of OSError
            raise ServerUnavailableError(slow) from exc
        except OSError as exc:  # http: refused, unknown host, reset
            raise ServerUnavailableError(
                f"cannot reach {where}: {exc.strerror or exc}; {hint}") from exc
        except http.client.HTTPException as exc:  # http: a port that does not speak HTTP/1.1
            raise ServerUnavailableError(
                f"cannot reach {where}: its answer is not HTTP; {hint}") from exc
        except InferenceServerException as exc:
            status = str(exc.status() or "")
            message = " ".join(str(exc.message()).split())
            if status in _TIMEOUT_STATUSES:
                raise ServerUnavailableError(slow) from exc
            if status in _UNREACHABLE_STATUSES:
                raise ServerUnavailableError(f"cannot reach {where}: {message}; {hint}") from exc
            if status.startswith("StatusCode."):
                shown = status.replace("StatusCode.", "gRPC ")
            else:
                shown = f"HTTP {status}" if status else "an error"
            counted = f" (its row numbers count from text {start})" if start else ""
            raise ServerError(
                f"{where} answered {shown} for texts {start}-{start + len(array) - 1}"
                f"{counted}: {message}",
                bad_request=status in _BAD_REQUEST_STATUSES) from exc

    def close(self) -> None:
        self._client.close()
