"""Errors of the python-backend steps: never an empty message, 400 for bad input, 500 otherwise.

The repository builder copies this file beside each step's `model.py` (the steps import it as
`step_errors`; it needs the stub's `triton_python_backend_utils` alone)::

    pb_utils.InferenceResponse(error=error("tenure: NaN at row(s) 0"))           # HTTP 400
    pb_utils.InferenceResponse(error=error(f"failed: {describe(exc)}", "INTERNAL"))  # HTTP 500
    answer_isolating(good, responses, self._answer, self._fail)   # one failure is its own
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


def answer_isolating(good, responses, answer, fail):
    """Answer the requests `good` ((request index, inputs) pairs) in one vectorised pass,
    `answer(good, responses)`; if that pass raises, run each request alone, so that only those
    that fail on their own get an error (`fail(item, exc, responses)`) and the rest answers."""
    try:
        answer(good, responses)
    except Exception as exc:
        if len(good) == 1:
            fail(good[0], exc, responses)
            return
        for item in good:
            try:
                answer([item], responses)
            except Exception as alone:
                fail(item, alone, responses)
