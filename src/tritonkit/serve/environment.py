"""Where tritonserver comes from and what it runs with: the binary and python backend that the
`nvidia-pytriton` wheel ships (laid out the way Triton expects), the Python that runs the python
stubs, and the environment (libraries, PYTHONPATH, PATH, allocator) they need (docs/platform.md).
`TritonServer` (serve/server.py) starts tritonserver with these::

    binary = tritonserver_binary()
    backends = prepare_backend_directory(CACHE / "triton-backends" / "python3.11", "3.11")
    env = server_environment(preload_allocator=True, python=stub_python())
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tritonkit.errors import ServerStartError

logger = logging.getLogger(__name__)

#: Allocators preloaded into tritonserver, the first one present wins. glibc malloc/free took
#: ~30 % of tritonserver's CPU at concurrency 64 (perf); jemalloc raised throughput ~25 %
#: (bench/suite.py). Triton's own docs recommend jemalloc or tcmalloc. Debian: libjemalloc2.
ALLOCATORS = (
    Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
    Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"),
    Path("/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4"),
)


def pytriton_root() -> Path:
    """The folder of the installed `pytriton` package (its tritonserver lies inside)."""
    try:
        import pytriton
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ServerStartError(
            "the nvidia-pytriton wheel is not installed: run `make setup`"
        ) from exc
    return Path(pytriton.__file__).resolve().parent


def tritonserver_binary() -> Path:
    """Path of the tritonserver binary shipped inside the nvidia-pytriton wheel."""
    binary = pytriton_root() / "tritonserver" / "bin" / "tritonserver"
    if not binary.exists():
        raise ServerStartError(f"tritonserver not found at {binary}: run `make setup`")
    return binary


@dataclasses.dataclass(frozen=True)
class StubPython:
    """The Python that runs the python stubs: its version (which stub), where its libpython
    lies, its bin/ and the site-packages the steps import from."""

    version: str
    libdir: str
    bin_dir: str
    site_packages: tuple[str, ...]
    #: a virtualenv of its own (not this interpreter's environment)
    separate: bool = False


_PROBE = ("import json, sys, sysconfig; p = sysconfig.get_paths(); print(json.dumps({"
          "'version': '%d.%d' % sys.version_info[:2], 'libdir': sysconfig.get_config_var("
          "'LIBDIR'), 'bin_dir': p['scripts'], 'site_packages': [p['purelib'], p['platlib']]}))")


@functools.cache
def stub_python(environment: Path | None = None) -> StubPython:
    """This interpreter, or the virtualenv at `environment` (asked by running its python)."""
    if environment is None:
        paths = sysconfig.get_paths()
        return StubPython(f"{sys.version_info.major}.{sys.version_info.minor}",
                          str(sysconfig.get_config_var("LIBDIR")),
                          str(Path(sys.executable).parent),
                          tuple(dict.fromkeys([paths["purelib"], paths["platlib"]])))
    python = environment / "bin" / "python"
    if not python.exists():
        raise ServerStartError(f"{environment} is not a virtualenv: {python} is missing")
    done = subprocess.run([str(python), "-I", "-c", _PROBE], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise ServerStartError(f"{python} does not run: {done.stderr.strip()[-500:]}")
    found = json.loads(done.stdout)
    return StubPython(found["version"], found["libdir"], found["bin_dir"],
                      tuple(dict.fromkeys(found["site_packages"])), separate=True)


def prepare_backend_directory(target: Path, version: str | None = None) -> Path:
    """Lay out `<target>/python/` the way Triton expects, from the wheel's files.

    The wheel keeps the backend library and one stub per Python version apart; Triton wants the
    stub beside `libtriton_python.so`. The stub must match the Python that runs the steps
    (`version`, "3.11"; default this interpreter's).
    """
    root = pytriton_root() / "tritonserver"
    source = root / "backends" / "python"
    version = version or f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise ServerStartError(
            f"no python backend stub for Python {version} in the nvidia-pytriton wheel: "
            "use Python 3.8 to 3.13"
        )
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for path in (
        source / "libtriton_python.so",
        source / "triton_python_backend_utils.py",
        stub,
    ):
        destination = python_dir / path.name
        if not destination.exists() or destination.stat().st_size != path.stat().st_size:
            # Copy then rename, so a server starting at the same time never sees half a file.
            partial = destination.with_name(f".{path.name}.{os.getpid()}")
            shutil.copy2(path, partial)
            os.replace(partial, destination)
    return target


def find_allocator() -> Path | None:
    """The first allocator of ALLOCATORS installed on this machine, if any."""
    return next((path for path in ALLOCATORS if path.exists()), None)


def server_environment(preload_allocator: bool = True, python: StubPython | None = None
                       ) -> dict[str, str]:
    """Environment for tritonserver and the python stubs it spawns.

    Workaround (Triton 2.51 from the pytriton wheel): the stub links `libcudart` from the wheel's
    `nvidia_pytriton.libs` and `libpython3.X.so` from its Python's LIBDIR, and imports
    numpy/onnxruntime through PYTHONPATH, so all three must be set for it. A separate
    environment (`python.separate`) gets its own site-packages alone: nothing of this process's
    PYTHONPATH reaches the steps.
    """
    python = python or stub_python()
    root = pytriton_root()
    libs = [str(root.parent / "nvidia_pytriton.libs"), python.libdir]
    env = dict(os.environ)
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(libs)
    paths = list(python.site_packages)
    if env.get("PYTHONPATH") and not python.separate:
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = ":".join(dict.fromkeys(paths))
    if python.separate:
        env.pop("VIRTUAL_ENV", None)
        env.pop("PYTHONHOME", None)
    # The stub's embedded interpreter ignores PYTHONPATH and finds its prefix (and so its
    # site-packages) from the first `python3` on PATH: put its Python's bin/ first, so a
    # virtualenv's numpy < 2 is the one imported, not a system numpy 2 (docs/platform.md).
    env["PATH"] = os.pathsep.join([python.bin_dir, env.get("PATH", "")])
    # Each step is one process per instance; extra BLAS/ORT threads only fight over the cores.
    env.setdefault("OMP_NUM_THREADS", "1")
    allocator = find_allocator() if preload_allocator else None
    if allocator is not None:
        env["LD_PRELOAD"] = ":".join(filter(None, [str(allocator), env.get("LD_PRELOAD")]))
    elif preload_allocator:
        logger.info("no jemalloc/tcmalloc found: `apt-get install libjemalloc2` makes "
                    "tritonserver ~25 % faster under load")
    return env
