"""`python -m tritonkit.scaling.hpa`: replay a recorded CPU series through the HPA policy of
deploy/k8s/ (tritonkit.scaling.replay, with the controller's arithmetic of
tritonkit.scaling.hpa_controller) and print the replica trajectory, or every sync as CSV::

    python -m tritonkit.scaling.hpa deploy/k8s/recorded/cpu_series.csv
    python -m tritonkit.scaling.hpa deploy/k8s/recorded/cpu_series.csv --hold-last-s 900
    python -m tritonkit.scaling.hpa ... --default-tolerance   # a cluster without the gate
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from tritonkit.scaling.replay import RECORDED, default_replay, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tritonkit.scaling.hpa",
        description="Replay a recorded CPU series through the HPA policy of deploy/k8s/.")
    parser.add_argument("series", type=Path, nargs="?", default=RECORDED / "cpu_series.csv")
    parser.add_argument("--hold-last-s", type=float, default=0.0,
                        help="repeat the last phase's samples this long after the recording")
    parser.add_argument("--default-tolerance", action="store_true",
                        help="ignore behavior.*.tolerance (a cluster without the feature gate)")
    parser.add_argument("--csv", action="store_true", help="every sync as CSV instead")
    args = parser.parse_args(argv)
    replay = default_replay(args.series, args.hold_last_s, args.default_tolerance)
    steps = replay.run()
    if args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["t_s", "phase", "demand_cores", "ready", "utilization", "proposed",
                         "stabilized", "replicas", "reason"])
        for s in steps:
            d = s.decision
            writer.writerow([d.time_s, s.phase, s.demand_cores, s.ready, d.utilization,
                             d.proposed, d.stabilized, d.replicas, d.reason])
    else:
        print(report(replay, steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
