"""Build manifests: what each stage of a build was made from, so a second run rebuilds nothing.

A stage (train, variants, render) is keyed by a fingerprint of its inputs: the spec fields it
reads, the source files that make it, and the files it consumes. A stage whose key and outputs
are unchanged is skipped; anything else rebuilds it and what depends on it. The manifest records
keys, output hashes, tool versions, gates and timings, as JSON beside the artefacts::

    manifest = Manifest.load(root / "manifest.json")
    key = fingerprint(values={"training": ...}, files=[Path("src/tritonkit/train/churn.py")])
    if not manifest.fresh("train", key):
        ...build...
        manifest.record("train", key, outputs=[root / "model.onnx"], seconds=12.3)
        manifest.save()
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

#: Distributions whose versions decide what a build writes (recorded, and part of every key).
TOOLS = ("numpy", "scikit-learn", "skl2onnx", "onnx", "onnxruntime", "onnxconverter-common",
         "torch", "transformers", "tokenizers", "tensorrt")


def tool_versions() -> dict[str, str]:
    """Installed versions of `TOOLS` ("absent" for those not installed) and Python's."""
    versions = {"python": platform.python_version()}
    for name in TOOLS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(*, values: Any = None, files: Iterable[Path] = ()) -> str:
    """sha256 over JSON `values` and the bytes of `files` (paths sorted, missing ones named)."""
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode())
    for path in sorted(Path(p) for p in files):
        digest.update(path.name.encode())
        digest.update(file_digest(path).encode() if path.exists() else b"<missing>")
    return digest.hexdigest()


class Manifest:
    """The JSON record of one artefact folder's or repository's stages."""

    def __init__(self, path: Path, data: dict[str, Any] | None = None) -> None:
        self.path = path
        self.data: dict[str, Any] = data or {"stages": {}}

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            data = None
        return cls(path, data if isinstance(data, dict) and "stages" in data else None)

    def stage(self, name: str) -> dict[str, Any]:
        return dict(self.data["stages"].get(name, {}))

    def fresh(self, name: str, key: str) -> bool:
        """Whether `name` was built from `key` and its outputs are still the files it wrote."""
        record = self.data["stages"].get(name)
        if not record or record.get("key") != key:
            return False
        base = self.path.parent
        return all((base / rel).exists() and file_digest(base / rel) == digest
                   for rel, digest in record.get("outputs", {}).items())

    def record(self, name: str, key: str, *, outputs: Iterable[Path], seconds: float,
               extra: Mapping[str, Any] | None = None) -> None:
        base = self.path.parent
        self.data["stages"][name] = {
            "key": key,
            "outputs": {str(p.relative_to(base)): file_digest(p) for p in sorted(outputs)},
            "seconds": round(seconds, 2),
            "tools": tool_versions(),
            **(extra or {}),
        }

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.data, indent=2, sort_keys=True) + "\n"
        if not self.path.exists() or self.path.read_text() != text:
            self.path.write_text(text)
