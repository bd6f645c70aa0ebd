"""The Wisconsin breast-cancer data (the `cancer` model's), as scikit-learn ships it: 569
fine-needle aspirates, 30 measurements each, and the diagnosis.

scikit-learn's target is 0 for malignant and 1 for benign; here `malignant` is 1 for a malignant
mass. Column names become identifiers (`mean radius` -> `mean_radius`), and each sample gets a
stable id from its row in the file (`wdbc-0000`)::

    frame = load(Path(".cache/data"))
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn.datasets import load_breast_cancer


def load(cache_dir: Path) -> pd.DataFrame:
    """The 569 samples: `sample_id`, the 30 measurements, `malignant` (0/1)."""
    del cache_dir  # bundled with scikit-learn: nothing to fetch
    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.data.rename(columns=lambda c: str(c).replace(" ", "_"))
    frame.insert(0, "sample_id", [f"wdbc-{i:04d}" for i in range(len(frame))])
    frame["malignant"] = (bunch.target == 0).astype("int64")
    return frame
