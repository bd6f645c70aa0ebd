"""Where the project's inputs and build outputs live, relative to the repository root.

    from tritonkit.paths import ARTIFACTS
    ARTIFACTS / "churn" / "1" / "model.onnx"
"""

from __future__ import annotations

import os
from pathlib import Path

#: The checkout (this file is src/tritonkit/paths.py); TRITONKIT_ROOT overrides it.
PROJECT_ROOT = Path(os.environ.get("TRITONKIT_ROOT", Path(__file__).resolve().parents[2]))
#: Trained models, schemas, reference profiles and metrics, one folder per model and version.
ARTIFACTS = PROJECT_ROOT / "artifacts"
#: Downloads (the data wheel).
CACHE = PROJECT_ROOT / ".cache"
