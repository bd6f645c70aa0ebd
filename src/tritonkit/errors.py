"""The project's exceptions: one base class and a few named failures.

Every message says what failed and how to fix it, e.g.::

    raise ServerStartError("tritonserver not found: run `make setup`")
"""

from __future__ import annotations


class TritonKitError(Exception):
    """Base class of every error this package raises on purpose."""


class SpecError(TritonKitError):
    """The model spec (configs/models.yaml) is invalid."""


class DataError(TritonKitError):
    """The data set could not be fetched or failed a check."""


class ParityError(TritonKitError):
    """An exported or optimized model disagrees with its source model."""


class ArtifactMissingError(TritonKitError):
    """A build artefact is missing: run `make build-engines`."""


class RepositoryError(TritonKitError):
    """A rendered model repository cannot be served where its target says it runs."""


class ServerStartError(TritonKitError):
    """tritonserver could not be started or did not become ready in time."""


class ServerInterrupted(TritonKitError):
    """A stop was requested (SIGTERM, Ctrl-C) while tritonserver was still starting."""


class ServerStopError(TritonKitError):
    """tritonserver did not exit cleanly."""


class CustomerError(TritonKitError):
    """A customer record cannot be sent: the message names the row and the field, e.g.
    ``row 3 (customerid 7590-VHVEG): tenure: '' is not a number``."""


class ServerUnavailableError(TritonKitError):
    """Triton could not be reached, or did not answer in time: is `make up` running?"""


class ServerError(TritonKitError):
    """Triton answered a request with an error; `bad_request` when it blamed the input."""

    def __init__(self, message: str, *, bad_request: bool = False) -> None:
        super().__init__(message)
        self.bad_request = bad_request


class SettingsError(TritonKitError):
    """A service's setting (a flag or its environment variable) has a value it cannot take."""
