"""Make Locust's CSV report hold a run's final figures (a workaround for Locust 2.47).

Locust writes its `--csv` files from a greenlet once a second and, at shutdown, closes them
without a last write, so `<prefix>_stats.csv` misses the run's last second (in one 6 s run its
Aggregated row said 5,659 requests where the run made 6,862; the HTML report and the printed
summary were right). Importing this module adds a listener that, when a headless run quits,
waits for one more write of the final statistics and then stops that greenlet, which under
`--processes` would otherwise wake once more after the files are closed and log
"ValueError: I/O operation on closed file"::

    import reports  # in a locustfile, for its listener
"""

from __future__ import annotations

import gc
from typing import Any

import gevent
from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner
from locust.stats import CSV_STATS_INTERVAL_SEC, StatsCSVFileWriter


def _csv_writer_greenlets() -> list[gevent.Greenlet]:
    """The greenlets running `StatsCSVFileWriter.stats_writer` (Locust keeps no handle)."""
    found = []
    for obj in gc.get_objects():
        if isinstance(obj, gevent.Greenlet) and not obj.dead:
            run = getattr(obj, "_run", None)
            if isinstance(getattr(run, "__self__", None), StatsCSVFileWriter):
                found.append(obj)
    return found


@events.quitting.add_listener
def _write_final_csv(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if (options is None or not getattr(options, "csv_prefix", None)
            or isinstance(environment.runner, WorkerRunner)):
        return
    writers = _csv_writer_greenlets()
    if writers:
        gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.2)  # one more write, with the final statistics
        for writer in writers:
            writer.kill(block=False)
