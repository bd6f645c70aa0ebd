"""What the clients of Triton's models share: tritonclient's HTTP or gRPC client, one inference
request (with the per-call deadline gRPC needs), and tritonclient's failures raised as this
package's errors, each naming the URL: `ServerUnavailableError` when Triton cannot be reached or
did not answer in time, `ServerError` (`bad_request` when Triton blamed the input) otherwise::

    class EchoClient(TritonClient):
        row_name, script = "text", "echo.py"    # "... for texts 0-2 ..."; "echo.py --timeout-s"

    client = EchoClient("127.0.0.1:8000", protocol="grpc", timeout_s=5.0)
    out = client.call(lambda: client.send("echo", [("text", array, "BYTES")], ["out"]), 0, 3)
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, TypeVar

import numpy as np
from tritonclient.utils import InferenceServerException

from tritonkit.errors import ServerError, ServerUnavailableError

WireProtocol = Literal["http", "grpc"]
T = TypeVar("T")
#: Status codes with which Triton blames the request rather than itself (HTTP, gRPC).
_BAD_REQUEST_STATUSES = frozenset({"400", "StatusCode.INVALID_ARGUMENT"})
#: gRPC status codes of a server that cannot be reached or did not answer in time.
_UNREACHABLE_STATUSES = frozenset({"StatusCode.UNAVAILABLE"})
_TIMEOUT_STATUSES = frozenset({"StatusCode.DEADLINE_EXCEEDED"})


class TritonClient:
    """tritonclient's client for `url` over `protocol`; subclasses add their model's calls."""

    #: How an error names one row of a request ("row 3", "text 3").
    row_name = "row"
    #: The script whose `--timeout-s` a time-out's message suggests raising.
    script = "predict.py"

    def __init__(self, url: str, protocol: WireProtocol = "http", timeout_s: float = 10.0) -> None:
        self.url = url
        self.protocol = protocol
        self.timeout_s = timeout_s
        if protocol == "http":
            import tritonclient.http as module
            self._client: Any = module.InferenceServerClient(
                url, connection_timeout=timeout_s, network_timeout=timeout_s
            )
        elif protocol == "grpc":
            import tritonclient.grpc as module
            self._client = module.InferenceServerClient(url)
        else:
            raise ValueError(f"protocol must be 'http' or 'grpc', not {protocol!r}")
        self._module = module

    def send(self, model: str, tensors: Iterable[tuple[str, np.ndarray, str]],
             outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """One request to `model` with (name, array, Triton wire data type) tensors as they are
        (binary over HTTP); the `outputs` by name.

        Raises:
            tritonclient.utils.InferenceServerException: with the server's message.
        """
        inputs = []
        for name, array, datatype in tensors:
            item = self._module.InferInput(name, list(array.shape), datatype)
            item.set_data_from_numpy(array)
            inputs.append(item)
        kwargs: dict[str, Any] = {
            "outputs": [self._module.InferRequestedOutput(n) for n in outputs]}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout_s
        result = self._client.infer(model, inputs, **kwargs)
        return {n: result.as_numpy(n) for n in outputs}

    def call(self, request: Callable[[], T], start: int, rows: int) -> T:
        """`request()` (rows `start` to `start + rows - 1` of the caller's input), with
        tritonclient's failures raised as this package's errors."""
        where = f"Triton at {self.url} ({self.protocol})"
        hint = f"is `make up` running, and is {self.url} its {self.protocol} port?"
        slow = (f"{where} did not answer within {self.timeout_s:g} s: is it overloaded? "
                f"raise the timeout ({self.script} --timeout-s)")
        try:
            return request()
        except TimeoutError as exc:  # http; a subclass of OSError
            raise ServerUnavailableError(slow) from exc
        except OSError as exc:  # http: refused, unknown host, reset
            raise ServerUnavailableError(
                f"cannot reach {where}: {exc.strerror or exc}; {hint}"
            ) from exc
        except http.client.HTTPException as exc:  # http: a port that does not speak HTTP/1.1
            raise ServerUnavailableError(
                f"cannot reach {where}: its answer is not HTTP; {hint}"
            ) from exc
        except InferenceServerException as exc:
            status = str(exc.status() or "")
            message = " ".join(str(exc.message()).split())  # one line, whatever the server sent
            if status in _TIMEOUT_STATUSES:
                raise ServerUnavailableError(slow) from exc
            if status in _UNREACHABLE_STATUSES:
                raise ServerUnavailableError(f"cannot reach {where}: {message}; {hint}") from exc
            if status.startswith("StatusCode."):
                shown = status.replace("StatusCode.", "gRPC ")
            else:
                shown = f"HTTP {status}" if status else "an error"
            counted = (f" (its row numbers count from {self.row_name} {start})" if start
                       else "")
            raise ServerError(
                f"{where} answered {shown} for {self.row_name}s {start}-{start + rows - 1}"
                f"{counted}: {message}",
                bad_request=status in _BAD_REQUEST_STATUSES,
            ) from exc

    def close(self) -> None:
        self._client.close()
