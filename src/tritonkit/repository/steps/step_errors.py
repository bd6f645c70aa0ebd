"""Errors of the python-backend steps: never an empty message, 400 for bad input, 500 otherwise.

The repository builder copies this file beside each step's `model.py` (the steps import it as
`step_errors`; it needs the stub's `triton_python_backend_utils` alone)::

    pb_utils.InferenceResponse(error=error("tenure: NaN at row(s) 0"))           # HTTP 400
    pb_utils.InferenceResponse(error=error(f"failed: {describe(exc)}", "INTERNAL"))  # HTTP 500
"""

import triton_python_backend_utils as pb_utils


def error(message, code_name="INVALID_ARG"):
    """A TritonError with a message that is never empty; INVALID_ARG is HTTP 400, INTERNAL 500.

    Stubs without error codes take the message alone (then Triton answers 500).
    """
    message = message or "request refused (no reason given)"
    code = getattr(pb_utils.TritonError, code_name, None)
    if code is None:
        return pb_utils.TritonError(message)
    return pb_utils.TritonError(message, code)


def describe(exc):
    """`Type: message` of an exception, never an empty string."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def log_error(message):
    logger = getattr(pb_utils, "Logger", None)
    if logger is not None:
        logger.log_error(message)
