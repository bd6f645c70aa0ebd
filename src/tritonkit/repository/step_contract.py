"""What the python steps and the monitoring read alike, written once: the request parameter
that marks a health probe, and the counter of requests a step refuses as the caller's mistake.

The repository builder copies this file beside every python step (`step_contract.py`, standard
library only); the sidecar, the rule renderer and the tests import it from here::

    body = {"inputs": [...], "parameters": {PROBE_PARAMETER: True}}   # a probe: no drift counts
    f"sum(rate({REFUSED_REQUESTS}{{model='churn_fused'}}[5m]))"     # a client's 400s
"""

#: A request carrying this parameter (any value) is a health probe of the monitoring sidecar:
#: the steps answer it like any other and leave its rows out of the drift counts; Triton's
#: request counters still count it, and the monitoring subtracts the probes it sent
#: (`tritonkit_monitor_probe_requests_total`). Triton 2.51 hands an ensemble request's
#: parameters to every step, and leaves them out of the response cache's key.
PROBE_PARAMETER = "tritonkit_probe"

#: Requests a step refused as the caller's mistake (INVALID_ARG: HTTP 400, gRPC
#: INVALID_ARGUMENT), by the step's model name: what tells a client's bad requests from the
#: server's failures in Triton's failure counter, which counts both.
REFUSED_REQUESTS = "tritonkit_refused_requests_total"
REFUSED_REQUESTS_HELP = "Requests the step refused as the caller's mistake (HTTP 400)."
