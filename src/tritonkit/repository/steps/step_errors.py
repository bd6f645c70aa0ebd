"""Errors of the python-backend steps: never an empty message, 400 for bad input, 500 otherwise.

The repository builder copies this file beside each step's `model.py` (the steps import it as
`step_errors`; it needs the stub's `triton_python_backend_utils` alone)::

    pb_utils.InferenceResponse(error=error("tenure: NaN at row(s) 0"))           # HTTP 400
    pb_utils.InferenceResponse(error=error(f"failed: {describe(exc)}", "INTERNAL"))  # HTTP 500
    answer_isolating(good, responses, self._answer, self._fail)   # one failure is its own
    answer_probes_apart(self, good, requests, responses)  # the same, probes counted nowhere
    probes = [is_probe(r) for r in requests]        # health probes: no drift counts
    self.refusals.count(responses)                  # the 400s, by this step's name
"""

import triton_python_backend_utils as pb_utils
from step_contract import PROBE_PARAMETER, REFUSED_REQUESTS, REFUSED_REQUESTS_HELP


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


def answer_probes_apart(step, good, requests, responses):
    """Answer `good` ((request index, inputs) pairs) with `step._answer(items, responses)`, one
    failing request isolated (`step._fail(index, exc, responses)`). While the step counts drift
    (`step.counting`) and health probes are among them, the clients' requests go first and the
    probes after, in a pass with `step.counting` off: their rows are counted nowhere."""
    if step.counting and any(is_probe(requests[i]) for i, _ in good):
        _answer_all(step, [item for item in good if not is_probe(requests[item[0]])],
                    responses)
        step.counting = False
        good = [item for item in good if is_probe(requests[item[0]])]
    _answer_all(step, good, responses)


def _answer_all(step, good, responses):
    if good:
        answer_isolating(good, responses, step._answer,
                         lambda item, exc, responses: step._fail(item[0], exc, responses))


def is_probe(request):
    """Whether `request` is a health probe of the monitoring sidecar (it carries the parameter
    `step_contract.PROBE_PARAMETER`): answered as any other, its rows left out of drift counts."""
    try:
        return PROBE_PARAMETER in request.parameters()
    except Exception:  # a stub without request parameters
        return False


class Refusals:
    """The requests this step refuses as the caller's mistake (INVALID_ARG), counted in
    `tritonkit_refused_requests_total{model=<this step>}` once per execute call: Triton's
    failure counter counts a client's 400s and the server's 500s alike."""

    def __init__(self, model_name):
        self._family = None
        self._metric = None
        self._invalid = getattr(pb_utils.TritonError, "INVALID_ARG", None)
        family = getattr(pb_utils, "MetricFamily", None)
        if family is None:  # a stub without custom metrics
            return
        try:
            # keep the family referenced: one left to the garbage collector breaks its metrics
            self._family = family(name=REFUSED_REQUESTS, description=REFUSED_REQUESTS_HELP,
                                  kind=family.COUNTER)
            self._metric = self._family.Metric(labels={"model": model_name})
        except Exception as exc:  # metrics off on the server: the step serves without them
            log_error(f"refused-request counter unavailable: {describe(exc)}")

    def count(self, responses):
        if self._metric is None:
            return
        refused = 0
        for response in responses:
            if response is not None and response.has_error() and (
                    self._invalid is None or response.error().code() == self._invalid):
                refused += 1
        if refused:
            try:
                self._metric.increment(refused)
            except Exception as exc:  # a metric call failing must never fail the requests
                log_error(f"refused-request counter: {describe(exc)}")
