"""A text-embedding model's build artefacts under `artifacts/<name>/<version>/`, and the export
stage that makes them (skipped when its inputs did not change).

    paths = TextEmbeddingArtifacts.for_version(1, name="minilm")
    export_stage("minilm", spec.models["minilm"], paths)     # torch only when it must export
    paths.require().variant("fp32")                          # artifacts/minilm/1/variants/fp32.onnx

Layout: `tokenizer.json` (copied from the source package), `variants/<variant>.onnx`,
`metrics.json` (the export's parity with torch), `texts/<set>.txt` (the corpus sets, one text
a line), `gates.json` (each variant's gate, by the variant stage), `manifest.json`.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from tritonkit.errors import ArtifactMissingError
from tritonkit.paths import ARTIFACTS
from tritonkit.spec import TextEmbedding
from tritonkit.stages.manifest import Manifest, fingerprint, tool_versions
from tritonkit.text import corpus
from tritonkit.text.tokenizer import TextTokenizer

logger = logging.getLogger(__name__)

#: Source files whose change re-exports (export.py is read from disk: importing it is cheap,
#: torch is imported inside its functions).
_HERE = Path(__file__).parent
EXPORT_SOURCES = tuple(_HERE / n for n in ("export.py", "tokenizer.py", "corpus.py",
                                            "embed.py", "artifacts.py"))


@dataclasses.dataclass(frozen=True)
class TextEmbeddingArtifacts:
    """Paths of one version's artefacts."""

    root: Path

    @classmethod
    def for_version(cls, version: int, *, name: str = "minilm", base: Path = ARTIFACTS
                    ) -> TextEmbeddingArtifacts:
        return cls(base / name / str(version))

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer.json"

    @property
    def metrics(self) -> Path:
        """The export's parity with torch on the evaluation texts (JSON)."""
        return self.root / "metrics.json"

    @property
    def gates(self) -> Path:
        """Each variant's accuracy gate against the FP32 graph (JSON, by the variant stage)."""
        return self.root / "gates.json"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    def texts(self, set_name: str) -> Path:
        """A corpus set as written at export time, one text a line."""
        return self.root / "texts" / f"{set_name}.txt"

    def variant(self, name: str) -> Path:
        return self.root / "variants" / f"{name}.onnx"

    def exported(self) -> tuple[Path, ...]:
        """What the export stage writes."""
        return (self.tokenizer, self.variant("fp32"), self.metrics,
                *(self.texts(s) for s in corpus.SET_SIZES))

    def require(self) -> TextEmbeddingArtifacts:
        missing = [str(p.relative_to(self.root)) for p in self.exported() if not p.exists()]
        if missing:
            raise ArtifactMissingError(
                f"{self.root} lacks {', '.join(missing)}: run `make build-engines`")
        return self

    def require_variant(self, name: str) -> Path:
        path = self.variant(name)
        if not path.exists():
            raise ArtifactMissingError(
                f"variant {name!r} of {self.root} is missing: it failed its accuracy gate or "
                f"was not built (see {self.gates.name}); run `make build-engines` or serve "
                "another variant (configs/models.yaml, variants.serve)")
        return path

    def dimension(self) -> int:
        """The embedding width (384 for MiniLM), as the export recorded it."""
        return int(json.loads(self.require().metrics.read_text())["dimension"])

    def read_texts(self, set_name: str) -> list[str]:
        return self.require().texts(set_name).read_text(encoding="utf-8").splitlines()

    def load_tokenizer(self) -> TextTokenizer:
        return TextTokenizer.from_file(self.require().tokenizer)


def export_key(model: TextEmbedding) -> str:
    """Fingerprint of everything the export reads: the source package's version and files,
    the sequence length, the export code, the corpus sizes and the tool versions."""
    from tritonkit.text.export import OPSET, SOURCE_FILES, source_folder

    folder = source_folder(model.source_package)
    return fingerprint(
        values={"package": model.source_package,
                "package_version": importlib.metadata.version(model.source_package),
                "max_sequence_length": model.max_sequence_length, "opset": OPSET,
                "sets": corpus.SET_SIZES, "tools": tool_versions()},
        files=[*(folder / f for f in SOURCE_FILES), *EXPORT_SOURCES])


def export_stage(name: str, model: TextEmbedding, paths: TextEmbeddingArtifacts, *,
                 force: bool = False) -> bool:
    """Export and check the FP32 graph, copy the tokenizer, write the corpus sets, unless the
    manifest shows the same inputs made the files there now; returns whether it ran."""
    manifest = Manifest.load(paths.manifest)
    key = export_key(model)
    if not force and manifest.fresh("export", key):
        logger.info("%s: exported model up to date (%s)", name, paths.root)
        return False
    from tritonkit.text.export import check_export, export_onnx, source_folder

    started = time.perf_counter()
    folder = source_folder(model.source_package)
    paths.root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / "tokenizer.json", paths.tokenizer)
    for set_name in corpus.SET_SIZES:
        paths.texts(set_name).parent.mkdir(parents=True, exist_ok=True)
        paths.texts(set_name).write_text(
            "".join(f"{t}\n" for t in corpus.corpus_set(set_name)), encoding="utf-8")
    logger.info("%s: exporting %s to ONNX (about 10 s)", name, model.source_package)
    export_onnx(folder, paths.variant("fp32"), max_length=model.max_sequence_length)
    logger.info("%s: checking the export against torch on %d texts (about 30 s)", name,
                corpus.SET_SIZES["evaluation"])
    figures = check_export(folder, paths.variant("fp32"), corpus.corpus_set("evaluation"),
                           TextTokenizer.from_file(paths.tokenizer),
                           max_length=model.max_sequence_length)
    seconds = figures.pop("seconds")
    metrics: dict[str, Any] = {
        "source": {"package": model.source_package,
                   "version": importlib.metadata.version(model.source_package)},
        "dimension": int(json.loads((folder / "config.json").read_text())["hidden_size"]),
        "onnx_parity": figures,
        "corpus": {"source": "pydoc_data.topics (Python's documentation)",
                   "sets": corpus.SET_SIZES},
    }
    paths.metrics.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    manifest = Manifest.load(paths.manifest)
    manifest.record("export", key, outputs=paths.exported(),
                    seconds=time.perf_counter() - started,
                    extra={"onnx_parity": figures, "check_seconds": seconds})
    manifest.save()
    return True
