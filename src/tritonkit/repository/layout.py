"""What every family's rendering shares: Triton model names, where a repository lives, and how
a python step's folder is laid out.

    names = step_names("churn")    # {"ensemble": "churn", "preprocess": "churn_preprocess", …}
    copy_step("onnx_model.py", repository / names["model"] / "1")
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from tritonkit.paths import PROJECT_ROOT
from tritonkit.spec import Spec

#: The python-backend step sources the builder copies as `<step>/<version>/model.py`.
STEPS_DIR = Path(__file__).resolve().parent / "steps"
#: the probe parameter and the refusal counter, shared by the steps and the monitoring
STEP_CONTRACT = Path(__file__).resolve().parent / "step_contract.py"
#: Beside every step that runs an ONNX graph in the python backend (the embedded target only:
#: production's image has no onnxruntime module, its graphs run on Triton's own backend).
ONNX_SESSION = (STEPS_DIR / "onnx_session.py", "onnx_session.py")


def step_names(model_name: str) -> dict[str, str]:
    """Triton model names of a model's ensemble and its steps.

    The ensemble is what clients call; `fused` is the one python step that a target with
    `fuse_python_steps` runs instead of preprocess and model. `packed` is a second entry point
    of a family whose inputs can travel as fewer tensors (the churn features as two): a fused
    python step served as it is, or an ensemble whose first step is `preprocess_packed`.
    """
    return {
        "ensemble": model_name,
        "preprocess": f"{model_name}_preprocess",
        "model": f"{model_name}_model",
        "postprocess": f"{model_name}_postprocess",
        "fused": f"{model_name}_fused",
        "packed": f"{model_name}_packed",
        "preprocess_packed": f"{model_name}_preprocess_packed",
    }


def repository_path(spec: Spec, target_name: str) -> Path:
    """Absolute path of a target's model repository."""
    path = spec.targets[target_name].repository
    return path if path.is_absolute() else PROJECT_ROOT / path


def copy_step(step_file: str, folder: Path, extra: Iterable[tuple[Path, str]] = ()) -> None:
    """A python step as `folder/model.py` with `step_errors.py`, `step_contract.py` and
    `extra` (source, name)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(STEPS_DIR / step_file, folder / "model.py")
    shutil.copy2(STEPS_DIR / "step_errors.py", folder / "step_errors.py")
    shutil.copy2(STEP_CONTRACT, folder / "step_contract.py")
    for source, name in extra:
        shutil.copy2(source, folder / name)


def stash_versions(repository: Path, model_name: str, version: str) -> Path | None:
    """Move aside the version folders other than `version` of the model's python steps,
    before `clear` and a render; `restore_versions` puts them back. A rollout (`make rollout
    VERSION=n`) loads a new version beside the one Triton serves, so rendering version n must
    not take the previous one away. Ensembles (empty version folders: one config runs every
    version) and native backends keep only the rendered version. Returns the stash, or None."""
    stash: Path | None = None
    for step in step_names(model_name).values():
        folder = repository / step
        if not _is_python_step(folder):
            continue
        for child in sorted(folder.iterdir()):
            if child.is_dir() and child.name.isdigit() and child.name != version:
                if stash is None:
                    # beside the repository (same file system), never inside Triton's view
                    stash = Path(tempfile.mkdtemp(prefix=f".{repository.name}-versions-",
                                                  dir=repository.parent))
                (stash / step).mkdir(exist_ok=True)
                child.rename(stash / step / child.name)
    return stash


def restore_versions(repository: Path, stash: Path | None) -> list[Path]:
    """Put back what `stash_versions` moved aside, into the steps that are still python steps
    after the render (a layout change drops them); returns the folders restored."""
    if stash is None:
        return []
    restored = []
    for step in sorted(stash.iterdir()):
        folder = repository / step.name
        if _is_python_step(folder):
            for child in sorted(step.iterdir()):
                if not (folder / child.name).exists():
                    child.rename(folder / child.name)
                    restored.append(folder / child.name)
    shutil.rmtree(stash, ignore_errors=True)
    return restored


def _is_python_step(folder: Path) -> bool:
    config = folder / "config.pbtxt"
    return config.exists() and 'backend: "python"' in config.read_text()


def clear(repository: Path, model_name: str) -> None:
    """Remove every step folder a model may have had, so a layout change leaves nothing stale."""
    for stale in step_names(model_name).values():
        shutil.rmtree(repository / stale, ignore_errors=True)
