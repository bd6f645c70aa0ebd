"""Shared fixtures: the spec, the build artefacts, a rendered repository and a real tritonserver.

The artefacts are built once (about 40 s) if `make build-engines` has not made them; the
repository is rendered into a temporary folder and served on free ports. Tests under
`integration/` start real tritonserver processes and carry the `integration` marker; tests under
`unit/` start no server (`make test-unit`, `make test-integration`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tritonkit.client.customers import read_customers
from tritonkit.families import family_of
from tritonkit.families.render import render_repository
from tritonkit.serve.ports import free_port
from tritonkit.serve.server import TritonServer
from tritonkit.serve.stack import ALERTMANAGER_BINARIES, AlertmanagerProcess
from tritonkit.spec import Spec, TabularClassifier, TextEmbedding, load_spec
from tritonkit.tabular.artifacts import TabularArtifacts
from tritonkit.tabular.contract import contract
from tritonkit.tabular.export import predict, session
from tritonkit.tabular.schema import FeatureSchema
from tritonkit.text.artifacts import TextEmbeddingArtifacts, export_stage

from .support import require_tool, serve

CHURN = contract("churn")
ALL_FEATURES = CHURN.features




@pytest.fixture(scope="session")
def spec() -> Spec:
    """The spec with the churn model alone: what most tests serve (the MiniLM model has its
    own tests and fixtures)."""
    return load_spec().only("churn")


@pytest.fixture(scope="session")
def churn_spec(spec: Spec) -> TabularClassifier:
    return spec.models["churn"]


@pytest.fixture(scope="session")
def artifacts(churn_spec: TabularClassifier) -> TabularArtifacts:
    paths = TabularArtifacts.for_version(churn_spec.version)
    logging.getLogger(__name__).info("building what `make build-engines` has not built")
    family_of(churn_spec).build("churn", churn_spec)  # a no-op when it is up to date
    return paths.require()


@pytest.fixture(scope="session")
def schema(artifacts: TabularArtifacts) -> FeatureSchema:
    return artifacts.load_schema()


@pytest.fixture(scope="session")
def customers(artifacts: TabularArtifacts) -> list[dict[str, Any]]:
    return read_customers(artifacts.test_rows)


@pytest.fixture(scope="session")
def in_process(
    artifacts: TabularArtifacts, schema: FeatureSchema, customers: list[dict[str, Any]]
) -> dict[str, np.ndarray]:
    """What the ONNX model says for every test customer, called in this process."""
    columns = {n: np.array([c[n] for c in customers]) for n in ALL_FEATURES}
    return predict(session(str(artifacts.onnx)), schema.encode(columns))


@pytest.fixture(scope="session")
def repositories(spec: Spec, artifacts: TabularArtifacts, tmp_path_factory: pytest.TempPathFactory
                 ) -> dict[str, Path]:
    """Both targets rendered into temporary folders, plus `embedded_split`: the embedded
    target without fused python steps."""
    out = {}
    for target in spec.targets:
        folder = tmp_path_factory.mktemp(f"repo-{target}")
        render_repository(spec, target, folder)
        out[target] = folder
    out["embedded_split"] = tmp_path_factory.mktemp("repo-embedded-split")
    render_repository(spec.with_fused_steps("embedded", False), "embedded",
                      out["embedded_split"])
    return out


@pytest.fixture(scope="session")
def triton(repositories: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[TritonServer]:
    """A real tritonserver serving the embedded repository (what `make up` serves)."""
    server = serve(repositories["embedded"], tmp_path_factory.mktemp("triton"))
    yield server
    server.stop(check=True)


@pytest.fixture(scope="session")
def tabular_built(artifacts: TabularArtifacts) -> dict[str, TabularArtifacts]:
    """Every tabular model of the shipped spec built (churn's `artifacts`, then the others: a
    few seconds each where `make build-engines` has not): what tests rendering the whole
    spec need."""
    built = {}
    for name, model in load_spec().models.items():
        if isinstance(model, TabularClassifier):
            family_of(model).build(name, model)  # a no-op when it is up to date
            built[name] = TabularArtifacts.for_version(model.version, name=name).require()
    return built


@pytest.fixture(scope="session")
def minilm_exported() -> TextEmbeddingArtifacts:
    """The MiniLM export (graph, tokenizer, corpus texts) of the shipped spec, made once if
    `make build-engines` has not (about 45 s): what unit tests reading them need."""
    model = load_spec().models["minilm"]
    assert isinstance(model, TextEmbedding)
    paths = TextEmbeddingArtifacts.for_version(model.version, name="minilm")
    export_stage("minilm", model, paths)  # a no-op when it is up to date
    return paths.require()


@pytest.fixture(scope="session")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertmanagerProcess]:
    """A real Alertmanager (Debian's prometheus-alertmanager) on a free port, with the shipped
    monitoring/alertmanager/alertmanager.yml, its receivers delivering to a port where nothing
    listens; skips with its reason where it is not installed (fails under CI)."""
    require_tool(ALERTMANAGER_BINARIES[0], "apt-get install prometheus-alertmanager",
                 *ALERTMANAGER_BINARIES[1:])
    process = AlertmanagerProcess(port=free_port(), workdir=tmp_path_factory.mktemp("alertmanager"),
                                  inbox=f"http://127.0.0.1:{free_port()}")
    process.start()
    yield process
    process.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration/ as `integration`."""
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)
