"""Publish a step's drift counts on Triton's /metrics, from a background thread.

Each `pb_utils` metric call crosses a process boundary and costs ~23 µs (docs/platform.md), so
the step only adds numpy counts per batch (`binning.DriftCounter`) and this thread turns them
into counter increments every `flush_interval_s`. The repository builder copies this file
beside the step with `binning.py` and `reference_profile.json`::

    publisher = DriftPublisher.start(here, args)                          # None when off
    publisher.counter.count_features(numbers, codes, blank)
    publisher.stop()                                                      # in finalize()
"""

import json
import os
import threading

import triton_python_backend_utils as pb_utils
from binning import METRICS, DriftCounter, DriftLayout
from step_errors import describe, log_error

PROFILE_FILE = "reference_profile.json"


class DriftPublisher:
    def __init__(self, layout, instance, flush_interval_s, warmup_requests=0):
        self.counter = DriftCounter(layout)
        self._warmup_left = warmup_requests
        # Keep every MetricFamily referenced as long as its metrics are used: one left to the
        # garbage collector makes every later call fail (docs/platform.md).
        self._families = {
            name: pb_utils.MetricFamily(
                name=name, description=text, kind=pb_utils.MetricFamily.COUNTER)
            for name, text in METRICS.items()
        }
        self._metrics = [
            self._families[name].Metric(labels={**labels, "model_instance": instance})
            for name, labels in layout.series
        ]
        self._interval_s = flush_interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drift-publisher", daemon=True)
        self._thread.start()

    @classmethod
    def start(cls, here, args):
        """A running publisher for the step in folder `here`, or None when the step's config
        turns drift metrics off or no profile lies beside it.

        The config's parameters say which model the series belong to (`drift_model`, the
        ensemble clients call) and how often to flush (`drift_flush_interval_s`).
        """
        parameters = json.loads(args["model_config"]).get("parameters", {})
        model = parameters.get("drift_model", {}).get("string_value", "")
        path = os.path.join(here, PROFILE_FILE)
        if not model or not os.path.exists(path):
            return None
        interval_s = float(
            parameters.get("drift_flush_interval_s", {}).get("string_value", "1.0"))
        warmup = int(parameters.get("drift_warmup_requests", {}).get("string_value", "0"))
        with open(path) as handle:
            profile = json.load(handle)
        layout = DriftLayout.from_profile(profile, model=model, version=args["model_version"])
        return cls(layout, args["model_instance_name"], interval_s, warmup)

    def counting(self, requests):
        """Whether to count an execute call of `requests` requests: not the warm-up ones, which
        Triton sends each instance, one sample per request, before its first real request."""
        if self._warmup_left <= 0:
            return True
        self._warmup_left -= requests
        return False

    def _run(self):
        while not self._stopped.wait(self._interval_s):
            self.flush()

    def flush(self):
        try:
            for index, count in self.counter.take():
                self._metrics[index].increment(count)
        except Exception as exc:  # a metric call failing must never stop the step
            log_error(f"drift metrics: flush failed: {describe(exc)}")

    def stop(self):
        """Stop flushing. Counts of the last interval are dropped: a metric call made while
        Triton unloads the model can wait on the server that is waiting for this finalize."""
        self._stopped.set()
        self._thread.join(timeout=1)
