"""Production parity: the production model repository (three churn steps, the packed entry
point, MiniLM's tokenizer step and encoder) rendered as `make build-engines` renders it, served
by the embedded tritonserver with CPU instances, its python steps run by a Python made from
deploy/triton/requirements.txt alone (the image's Python version where this machine has it).
Real churn and MiniLM requests go through every production ensemble; a step importing a module
the file lacks keeps the server from starting (tritonkit.serve.parity says what stands in for
the GPU and the native onnxruntime backend)."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from tritonkit.client.churn import ChurnClient, Prediction
from tritonkit.client.customers import columns_from_rows
from tritonkit.client.embedding import EmbeddingClient
from tritonkit.drift.binning import PREDICTION_BIN, ROWS
from tritonkit.errors import ServerStartError
from tritonkit.families import family_of
from tritonkit.families.render import render_repository
from tritonkit.paths import CACHE
from tritonkit.repository.imports import pinned
from tritonkit.serve.parity import (
    IMAGE_PYTHON,
    REQUIREMENTS,
    ParityEnvironment,
    _shared_python,
    cpu_repository,
)
from tritonkit.serve.server import TritonServer
from tritonkit.spec import Spec, TextEmbedding, load_spec
from tritonkit.text import corpus
from tritonkit.text.artifacts import TextEmbeddingArtifacts
from tritonkit.text.embed import TextEmbedder

from ..support import counter, post, serve

logger = logging.getLogger(__name__)
#: The response cache compose gives tritonserver (docker-compose.yml, --cache-config).
CACHE_BYTES = 64 << 20


@pytest.fixture(scope="module")
def production_spec() -> Spec:
    """The shipped spec, MiniLM building only the variants the two targets serve here (FP32 on
    the embedded target instead of INT8, which production does not serve): production's
    variants, FP16 for MiniLM, are the shipped ones."""
    spec = load_spec()
    minilm = spec.models["minilm"]
    assert isinstance(minilm, TextEmbedding)
    served = minilm.variants.serve["production"]
    variants = minilm.variants.model_copy(update={
        "build": ["fp32", served], "serve": {"embedded": "fp32", "production": served}})
    return spec.model_copy(update={"models": {
        **spec.models, "minilm": minilm.model_copy(update={"variants": variants})}})


@pytest.fixture(scope="module")
def environment() -> ParityEnvironment:
    return ParityEnvironment.make(REQUIREMENTS, CACHE / "parity")


@pytest.fixture(scope="module")
def parity_repository(production_spec: Spec, environment: ParityEnvironment,
                      tabular_built: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    minilm = production_spec.models["minilm"]
    family_of(minilm).build("minilm", minilm)  # a no-op when `make build-engines` made it
    production = tmp_path_factory.mktemp("production")
    render_repository(production_spec, "production", production)
    out = tmp_path_factory.mktemp("parity") / "repository"
    assert sorted(cpu_repository(production, out, environment)) == [
        "cancer_model", "churn_model", "minilm_model"]
    return out


@pytest.fixture(scope="module")
def parity_triton(parity_repository: Path, environment: ParityEnvironment,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    server = serve(parity_repository, tmp_path_factory.mktemp("parity-triton"),
                   python_environment=environment.venv, cache_size_bytes=CACHE_BYTES)
    yield server
    server.stop(check=True)


def test_parity_environment_holds_the_image_requirements_and_nothing_else(
        environment: ParityEnvironment) -> None:
    assert environment.installed() == pinned(REQUIREMENTS) == {"numpy", "tokenizers"}
    if _shared_python(IMAGE_PYTHON) is not None:  # the image's Python, where this machine has it
        assert environment.python_version == IMAGE_PYTHON
    logger.info("parity environment: Python %s", environment.python_version)


def _predict(server: TritonServer, protocol: str, packed: bool,
             customers: list[dict[str, Any]]) -> list[Prediction]:
    url = server.http_url.removeprefix("http://") if protocol == "http" else server.grpc_url
    client = ChurnClient(url, protocol, packed=packed)  # type: ignore[arg-type]
    try:
        return client.predict(customers, batch_size=50)
    finally:
        client.close()


@pytest.mark.parametrize("packed", [False, True], ids=["churn", "churn_packed"])
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_production_churn_ensembles_answer_every_test_customer_as_the_source_graph(
    parity_triton: TritonServer, protocol: str, packed: bool, customers: list[dict[str, Any]],
    in_process: dict[str, np.ndarray],
) -> None:
    """preprocess -> the numeric core (the stand-in) -> the numpy head answer what the whole
    graph answers in this process: probability, risk level and version, for every customer."""
    answers = _predict(parity_triton, protocol, packed, customers)
    assert len(answers) == len(customers) > 700
    np.testing.assert_allclose([a.churn_probability for a in answers],
                               in_process["churn_probability"][:, 0], rtol=0, atol=1e-6)
    assert [a.risk_level for a in answers] == [
        v.decode() if isinstance(v, bytes) else v for v in in_process["risk_level"][:, 0]]
    assert {a.model_version for a in answers} == {"1"}


def test_production_steps_count_each_row_and_each_prediction_once(
        parity_triton: TritonServer, customers: list[dict[str, Any]]) -> None:
    """The preprocess step counts the rows, the numpy head (churn_postprocess) the
    predictions, into the series the sidecar reads. Customers no earlier request sent: the
    response cache answers a repeated one without running the steps, and so without counting."""
    fresh = [{**c, "tenure": c["tenure"] + 0.25} for c in customers[:200]]
    rows, predictions = _settled(parity_triton)
    assert len(_predict(parity_triton, "http", False, fresh)) == len(fresh)
    deadline = time.monotonic() + 10
    while counter(parity_triton, PREDICTION_BIN, model="churn") < predictions + len(fresh):
        assert time.monotonic() < deadline, "the drift counters did not catch up"
        time.sleep(0.2)
    assert _settled(parity_triton) == (rows + len(fresh), predictions + len(fresh))


def _settled(server: TritonServer) -> tuple[float, float]:
    """(rows, predictions) counted for churn, once unchanged over more than the steps' 1 s
    flush interval (the counts of earlier requests flushed)."""
    def read() -> tuple[float, float]:
        return (counter(server, ROWS, model="churn"), counter(server, PREDICTION_BIN,
                                                               model="churn"))
    last, deadline = read(), time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(1.2)
        now = read()
        if now == last:
            break
        last = now
    return last


def test_production_churn_refuses_a_bad_customer_by_name_and_keeps_serving(
        parity_triton: TritonServer, customers: list[dict[str, Any]]) -> None:
    client = ChurnClient(parity_triton.http_url.removeprefix("http://"))
    try:
        bad = {**customers[0], "contract": "Weekly"}
        columns = columns_from_rows([bad])
        with pytest.raises(InferenceServerException, match="contract: unknown category 'Weekly'"):
            client.infer_columns(columns)
        assert client.predict(customers[:3])[0].churn_probability > 0
    finally:
        client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_production_minilm_embeds_real_texts_as_the_served_variant_in_process(
        parity_triton: TritonServer, production_spec: Spec, protocol: str) -> None:
    """minilm_preprocess (tokenizers from the requirements) -> the FP16 encoder (the stand-in)."""
    model = production_spec.models["minilm"]
    assert isinstance(model, TextEmbedding)
    paths = TextEmbeddingArtifacts.for_version(model.version, name="minilm")
    texts = list(corpus.corpus_set("evaluation"))[:128]
    expected = TextEmbedder.load(paths.variant(model.variants.serve["production"]),
                                 paths.tokenizer, max_length=model.max_sequence_length
                                 ).embed(texts)
    url = (parity_triton.http_url.removeprefix("http://") if protocol == "http"
           else parity_triton.grpc_url)
    client = EmbeddingClient(url, protocol)  # type: ignore[arg-type]
    try:
        got = client.embed(texts)
    finally:
        client.close()
    assert np.isfinite(got).all()
    cosine = np.sum(got * expected, axis=1)  # both L2-normalised
    assert cosine.min() >= 0.999, cosine.min()


def test_production_minilm_refuses_an_empty_text_and_keeps_serving(
        parity_triton: TritonServer) -> None:
    body = {"inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES",
                        "data": ["a real sentence", ""]}]}
    status, answer = post(parity_triton, body, "minilm")
    assert status == 400 and "text: row 1" in json.dumps(answer)
    body["inputs"][0]["data"] = ["a real sentence", "and another one"]
    assert post(parity_triton, body, "minilm")[0] == 200


def test_production_step_importing_a_module_the_image_lacks_keeps_triton_from_starting(
        parity_repository: Path, environment: ParityEnvironment,
        tmp_path: Path) -> None:
    """scipy is in the project's environment, not in the image's: the head step importing it
    fails to load in the parity environment, as it would in the NGC image."""
    broken = tmp_path / "repository"
    shutil.copytree(parity_repository, broken)
    step = broken / "churn_postprocess" / "1" / "model.py"
    step.write_text("import scipy  # not in deploy/triton/requirements.txt\n" + step.read_text())
    with pytest.raises(ServerStartError, match="No module named 'scipy'"):
        serve(broken, tmp_path, python_environment=environment.venv)
