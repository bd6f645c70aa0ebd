"""Production parity on a plain machine: the production model repository, served by the
embedded tritonserver with every instance on the CPU, its python steps run by a Python made
from the Triton image's requirements file alone.

What differs from production, and why: this tritonserver has no onnxruntime backend, so each
model of the native onnxruntime backend is served by a stand-in, the python step
`onnx_model.py` running the same `model.onnx` with onnxruntime (STANDIN_ONNXRUNTIME, installed
beside the stand-in only; the real python steps never see it); GPU instances and the TensorRT
accelerator become CPU instances; a TensorRT plan cannot stand in at all. Everything else is
the production repository as rendered: its python steps, configs, ensembles, warm-up, batching.
The environment's Python is the image's version (IMAGE_PYTHON) where this machine has one with
a shared libpython, else this interpreter's (`ParityEnvironment.python_version` says which)::

    env = ParityEnvironment.make(REQUIREMENTS, CACHE / "parity")
    cpu_repository(Path("build/production/model_repository"), tmp / "repo", env)
    TritonServer(ServerSettings(model_repository=tmp / "repo",
                                python_environment=env.venv)).start()
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from tritonkit.errors import ServerStartError
from tritonkit.paths import PROJECT_ROOT
from tritonkit.repository.config import read_config, write_config
from tritonkit.repository.layout import ONNX_SESSION, STEP_CONTRACT, STEPS_DIR
from tritonkit.serve.environment import stub_python

logger = logging.getLogger(__name__)

#: The requirements file of the production image (deploy/triton/Dockerfile).
REQUIREMENTS = PROJECT_ROOT / "deploy" / "triton" / "requirements.txt"
#: The Python of the pinned NGC image (24.10: Ubuntu 22.04, Python 3.10).
IMAGE_PYTHON = "3.10"
#: The onnxruntime that stands in for Triton's onnxruntime backend. 1.19.2, the release of the
#: 2.5x images' backend, answers inf for every text through the FP16 MiniLM graph on its CPU
#: provider (1.20.1 and later answer what 1.32 does), so the oldest correct one stands in.
STANDIN_ONNXRUNTIME = "onnxruntime==1.20.1"
_STANDIN_MODULE = "native_onnx_standin"


def _shared_python(version: str) -> str | None:
    """An interpreter of `version` built with a shared libpython (the stub links it), if this
    machine has one: on PATH, or among pyenv's versions."""
    candidates = [shutil.which(f"python{version}")]
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(str(root / "versions" / f"{version}.*" / "bin" /
                                       f"python{version}")), reverse=True)
    for candidate in filter(None, candidates):
        done = subprocess.run(
            [candidate, "-c", "import sysconfig; print(sysconfig.get_config_var("
                              "'Py_ENABLE_SHARED'))"],
            capture_output=True, text=True, check=False)
        if done.returncode == 0 and done.stdout.strip() == "1":
            return candidate
    return None


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ServerStartError(f"{what} failed ({' '.join(cmd[:4])} ...): "
                               f"{(done.stderr or done.stdout).strip()[-1500:]}")


@dataclasses.dataclass(frozen=True)
class ParityEnvironment:
    """A virtualenv holding the requirements file's packages and nothing else, and a folder
    with the stand-in's onnxruntime for the same Python."""

    venv: Path
    standin_site: Path
    python_version: str

    @classmethod
    def make(cls, requirements: Path, folder: Path) -> ParityEnvironment:
        """Create (or reuse, keyed by the file's contents and the Python) the environment:
        `pip install --no-deps --require-hashes -r requirements`, as the image's Dockerfile."""
        python = _shared_python(IMAGE_PYTHON)
        if python is None:
            python = sys.executable
            logger.warning("no Python %s with a shared libpython here: the parity environment "
                           "uses this interpreter's Python %d.%d instead of the image's",
                           IMAGE_PYTHON, *sys.version_info[:2])
        version = subprocess.run([python, "-c", "import sys; print('%d.%d' % "
                                  "sys.version_info[:2])"], capture_output=True, text=True,
                                 check=True).stdout.strip()
        digest = hashlib.sha256(requirements.read_bytes() + STANDIN_ONNXRUNTIME.encode()
                                ).hexdigest()[:12]
        root = folder / f"py{version}-{digest}"
        venv, site = root / "venv", root / "standin"
        done = root / ".complete"
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            # (run from a virtualenv's python, venv builds on the base interpreter: nothing of
            # the project's packages is seen)
            _run([python, "-m", "venv", str(venv)], "creating the parity virtualenv")
            _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                  "--disable-pip-version-check", "--no-deps", "--require-hashes",
                  "-r", str(requirements)], f"installing {requirements.name}")
            _run([sys.executable, "-m", "pip", "install", "--quiet",
                  "--disable-pip-version-check", "--no-deps", "--only-binary=:all:",
                  "--python-version", version, "--target", str(site), STANDIN_ONNXRUNTIME],
                 "installing the onnxruntime stand-in")
            done.touch()
        return cls(venv=venv, standin_site=site, python_version=version)

    def installed(self) -> set[str]:
        """The distributions of the virtualenv (pip and setuptools, which venv adds, aside)."""
        names = set()
        for folder in stub_python(self.venv).site_packages:
            for meta in Path(folder).glob("*.dist-info"):
                names.add(meta.name.split("-")[0].lower().replace("_", "-"))
        return names - {"pip", "setuptools"}


def _standin_source(site: Path) -> str:
    return (
        '"""Stands in for Triton\'s onnxruntime backend on a tritonserver that has none\n'
        '(tritonkit.serve.parity): onnx_model.py, with onnxruntime from a folder of its own."""\n'
        "import sys\n\n"
        f"sys.path.append({str(site)!r})\n\n"
        f"from {_STANDIN_MODULE} import TritonPythonModel  # noqa: E402,F401\n")


def cpu_repository(production: Path, out: Path, environment: ParityEnvironment) -> list[str]:
    """Copy the production repository to `out` for the embedded tritonserver: GPU instances on
    the CPU, the GPU accelerators dropped, each native onnxruntime model served by the
    stand-in; returns the names of the models that were stood in for.

    Raises:
        ServerStartError: a TensorRT plan, which nothing here can run.
    """
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(production, out)
    replaced = []
    for config_path in sorted(out.glob("*/config.pbtxt")):
        config = read_config(config_path)
        for group in config.instance_group:
            if group.kind == mc.ModelInstanceGroup.KIND_GPU:
                group.kind = mc.ModelInstanceGroup.KIND_CPU
                del group.gpus[:]
        config.optimization.execution_accelerators.ClearField("gpu_execution_accelerator")
        if config.platform == "tensorrt_plan" or config.backend == "tensorrt":
            raise ServerStartError(f"{config.name} is a TensorRT plan: it runs only on a GPU")
        if config.platform == "onnxruntime_onnx" or config.backend == "onnxruntime":
            config.ClearField("platform")
            config.ClearField("default_model_filename")
            config.backend = "python"
            for version in (p for p in config_path.parent.iterdir() if p.name.isdigit()):
                shutil.copy2(STEPS_DIR / "onnx_model.py", version / f"{_STANDIN_MODULE}.py")
                shutil.copy2(STEPS_DIR / "step_errors.py", version / "step_errors.py")
                shutil.copy2(STEP_CONTRACT, version / "step_contract.py")
                shutil.copy2(ONNX_SESSION[0], version / ONNX_SESSION[1])
                (version / "model.py").write_text(_standin_source(environment.standin_site))
            replaced.append(config.name)
        if not config.optimization.execution_accelerators.ByteSize():
            config.optimization.ClearField("execution_accelerators")
        if not config.optimization.ByteSize():
            config.ClearField("optimization")
        write_config(config, config_path.parent)
    return replaced
