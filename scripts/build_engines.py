#!/usr/bin/env python3
"""Build the models and render the Triton model repositories (`make build-engines`).

A thin entry point of `tritonkit build` (tritonkit.builder.cli); `--help` lists the options.
"""

import sys

from tritonkit.builder.cli import main

if __name__ == "__main__":
    sys.exit(main())
