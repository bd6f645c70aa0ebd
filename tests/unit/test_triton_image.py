"""The production Triton image (deploy/triton/): the python steps of the production repository
import only what its requirements file pins, the build refuses one that imports more, the
Dockerfile installs exactly that file, and the entrypoint closes the same APIs as the embedded
server's `admin_key` (serve/server.py RESTRICTED_APIS)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tritonkit.errors import RepositoryError
from tritonkit.families.render import render_repository
from tritonkit.paths import PROJECT_ROOT
from tritonkit.repository.imports import imported_modules, pinned, undeclared_imports
from tritonkit.serve.parity import REQUIREMENTS
from tritonkit.serve.server import RESTRICTED_APIS
from tritonkit.spec import Spec

IMAGE = PROJECT_ROOT / "deploy" / "triton"
ENTRYPOINT = IMAGE / "entrypoint.sh"


def test_production_steps_import_only_what_the_image_requirements_pin(
        repositories: dict[str, Path]) -> None:
    assert undeclared_imports(repositories["production"], REQUIREMENTS) == []
    # the embedded target's steps run onnxruntime themselves: the check sees it
    embedded = undeclared_imports(repositories["embedded"], REQUIREMENTS)
    assert embedded and all("imports onnxruntime" in line for line in embedded)


def test_import_check_names_the_file_and_module_when_a_step_imports_more(
        repositories: dict[str, Path], tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    shutil.copytree(repositories["production"], repository)
    step = repository / "churn_postprocess" / "1" / "model.py"
    step.write_text(step.read_text().replace(
        "import numpy as np\n", "import numpy as np\nif False:\n    import scipy.stats\n"))
    (problem,) = undeclared_imports(repository, REQUIREMENTS)
    assert problem.startswith("churn_postprocess/1/model.py imports scipy (distribution scipy)")


def test_render_refuses_a_production_step_whose_module_the_requirements_lack(
        spec: Spec, tmp_path: Path) -> None:
    """churn's steps need numpy: a requirements file without it fails the render, naming it."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("tokenizers==0.23.3\n")
    target = spec.targets["production"].model_copy(update={"python_requirements": requirements})
    narrowed = spec.model_copy(update={"targets": {**spec.targets, "production": target}})
    with pytest.raises(RepositoryError, match=r"churn_preprocess/1/.*imports numpy"):
        render_repository(narrowed, "production", tmp_path / "repository")


def test_imported_modules_sees_conditional_and_nested_imports() -> None:
    source = ("import os, json.decoder\nfrom a.b import c\nfrom . import sibling\n"
              "def f():\n    import onnxruntime as ort\ntry:\n    import x\nexcept ImportError:\n"
              "    pass\n")
    assert imported_modules(source) == {"os", "json", "a", "onnxruntime", "x"}


def test_requirements_pin_every_package_with_hashes_and_numpy_below_2() -> None:
    text = REQUIREMENTS.read_text().replace("\\\n", " ")
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    assert pinned(REQUIREMENTS) == {"numpy", "tokenizers"}
    for line in lines:
        assert re.match(r"^[A-Za-z0-9_.-]+==[0-9][^ ]* ", line), line
        assert "--hash=sha256:" in line, line
    numpy = next(line for line in lines if line.startswith("numpy=="))
    assert numpy.startswith("numpy==1.")


def test_dockerfile_installs_the_requirements_alone_from_the_image_compose_and_make_name(
        ) -> None:
    dockerfile = (IMAGE / "Dockerfile").read_text()
    default = re.search(r"^ARG TRITON_IMAGE=(\S+)$", dockerfile, re.M)
    assert default is not None and "FROM ${TRITON_IMAGE}" in dockerfile
    assert "COPY deploy/triton/requirements.txt" in dockerfile
    assert re.search(r"pip install --no-deps --require-hashes -r \S*requirements\.txt",
                     dockerfile)
    assert 'ENTRYPOINT ["/opt/tritonkit/entrypoint.sh"]' in dockerfile
    assert re.search(r"^USER triton-server$", dockerfile, re.M)
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    build = compose["services"]["triton"]["build"]
    assert build["dockerfile"] == "deploy/triton/Dockerfile"
    assert build["args"]["TRITON_IMAGE"] == f"${{TRITON_IMAGE:-{default.group(1)}}}"
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert f"TRITON_IMAGE ?= {default.group(1)}" in makefile


def test_entrypoint_restricts_the_apis_the_embedded_server_restricts() -> None:
    found = re.search(r'^RESTRICTED_APIS="([^"]+)"$', ENTRYPOINT.read_text(), re.M)
    assert found is not None and tuple(found.group(1).split(",")) == RESTRICTED_APIS


def _entrypoint(tmp_path: Path, key: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    """Run entrypoint.sh with a stand-in tritonserver that prints its arguments."""
    fake = tmp_path / "tritonserver"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    key_file = tmp_path / "admin-key"
    if key is not None:
        key_file.write_text(key + "\n")
    env = {**os.environ, "TRITONSERVER": str(fake), "TRITON_ADMIN_KEY_FILE": str(key_file)}
    return subprocess.run(["sh", str(ENTRYPOINT), *args], capture_output=True, text=True,
                          env=env, check=False)


def test_entrypoint_passes_the_key_from_its_file_to_both_restriction_flags(
        tmp_path: Path) -> None:
    key = "k" * 40
    done = _entrypoint(tmp_path, key, "--model-repository=/models")
    assert done.returncode == 0, done.stderr
    restricted = ",".join(RESTRICTED_APIS)
    assert done.stdout.splitlines() == [
        "--model-repository=/models",
        f"--http-restricted-api={restricted}:admin-key={key}",
        f"--grpc-restricted-protocol={restricted}:admin-key={key}"]


@pytest.mark.parametrize(("key", "message"), [
    (None, "cannot read Triton's admin key"),
    ("", "must hold one key"),
    ("short", "shorter than 32 characters"),
    ("a" * 40 + ",model-repository", "must hold one key"),
])
def test_entrypoint_refuses_to_start_without_a_usable_key(
        tmp_path: Path, key: str | None, message: str) -> None:
    done = _entrypoint(tmp_path, key)
    assert done.returncode == 64 and message in done.stderr and done.stdout == ""
