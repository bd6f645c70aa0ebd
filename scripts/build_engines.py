#!/usr/bin/env python3
"""Build the models and render the Triton model repositories (`make build-engines`).

    python scripts/build_engines.py                     # train if needed, render both targets
    python scripts/build_engines.py --retrain --target embedded
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from tritonkit.artifacts import ChurnArtifacts, build_churn_artifacts
from tritonkit.repository.build import render_repository
from tritonkit.spec import DEFAULT_SPEC, load_spec

logger = logging.getLogger("build_engines")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="the model spec (YAML)")
    parser.add_argument(
        "--target", action="append", choices=["embedded", "production"],
        help="target(s) to render; default: every target of the spec",
    )
    parser.add_argument("--retrain", action="store_true",
                        help="train and export again even if the artefacts exist")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    spec = load_spec(args.spec)
    for name, pipeline in spec.pipelines.items():
        paths = ChurnArtifacts.for_version(pipeline.version)
        if args.retrain or not paths.complete():
            logger.info("building artefacts of %s v%d", name, pipeline.version)
            build_churn_artifacts(pipeline, paths)
        metrics = paths.load_metrics()["test"]
        logger.info("%s v%d test split: %s", name, pipeline.version, json.dumps(metrics))
    for target in args.target or list(spec.targets):
        render_repository(spec, target)


if __name__ == "__main__":
    main()
