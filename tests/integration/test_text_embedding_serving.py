"""The `minilm` ensemble on a real tritonserver, fused (what `make up` serves) and split:
embeddings over HTTP and gRPC equal the in-process FP32 graph's for every evaluation text, bad
texts get clear errors while the rest of a batch is answered, and the server keeps serving.

The repository holds minilm alone, served as FP32 (the variant stage is not needed here).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from tritonkit.client.embedding import EmbeddingClient
from tritonkit.paths import PROJECT_ROOT
from tritonkit.serve.server import TritonServer
from tritonkit.spec import Spec, TextEmbedding, load_spec
from tritonkit.text import corpus
from tritonkit.text import family as text_embedding
from tritonkit.text.artifacts import TextEmbeddingArtifacts, export_stage
from tritonkit.text.embed import TextEmbedder, cosine

from ..support import serve

pytestmark = pytest.mark.integration

NAME = "minilm"
#: Request sizes cycled over the texts, so dynamic batches mix requests of several sizes and
#: token lengths (and padding to the batch's longest text must not change a text's vector).
CHUNKS = (1, 7, 16, 3, 32, 2, 64)


@pytest.fixture(scope="module")
def minilm_spec() -> Spec:
    spec = load_spec().only(NAME)
    model = spec.models[NAME]
    variants = model.variants.model_copy(update={"serve": {t: "fp32" for t in spec.targets}})
    return spec.model_copy(update={"models": {NAME: model.model_copy(
        update={"variants": variants})}})


@pytest.fixture(scope="module")
def minilm_artifacts(minilm_spec: Spec) -> TextEmbeddingArtifacts:
    model = minilm_spec.models[NAME]
    assert isinstance(model, TextEmbedding)
    paths = TextEmbeddingArtifacts.for_version(model.version, name=NAME)
    export_stage(NAME, model, paths)
    return paths.require()


@pytest.fixture(scope="module")
def evaluation() -> list[str]:
    return list(corpus.corpus_set("evaluation"))


@pytest.fixture(scope="module")
def expected(minilm_artifacts: TextEmbeddingArtifacts, evaluation: list[str]) -> np.ndarray:
    """What the FP32 graph says for every evaluation text, in this process."""
    return TextEmbedder.load(minilm_artifacts.variant("fp32"), minilm_artifacts.tokenizer,
                             max_length=128).embed(evaluation)


@pytest.fixture(scope="module", params=["fused", "split"])
def triton(request: pytest.FixtureRequest, minilm_spec: Spec,
           minilm_artifacts: TextEmbeddingArtifacts,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    spec = minilm_spec.with_fused_steps("embedded", request.param == "fused")
    repository = tmp_path_factory.mktemp(f"repo-minilm-{request.param}")
    text_embedding.render(repository, spec, "embedded", NAME,
                          spec.models[NAME])  # type: ignore[arg-type]
    server = serve(repository, tmp_path_factory.mktemp(f"triton-minilm-{request.param}"))
    yield server
    server.stop(check=True)


def _client(triton: TritonServer, protocol: str) -> EmbeddingClient:
    url = triton.http_url.removeprefix("http://") if protocol == "http" else triton.grpc_url
    return EmbeddingClient(url, protocol=protocol, timeout_s=60)  # type: ignore[arg-type]


def _chunks(texts: list[str]) -> list[list[str]]:
    out, start, k = [], 0, 0
    while start < len(texts):
        size = CHUNKS[k % len(CHUNKS)]
        out.append(texts[start:start + size])
        start, k = start + size, k + 1
    return out


def _embed_concurrently(triton: TritonServer, protocol: str, jobs: list[list[str]],
                        workers: int = 4) -> list[np.ndarray]:
    """Each job's embeddings, sent from `workers` threads at once, each with its own client
    (tritonclient's HTTP client runs on gevent and must stay in the thread that made it)."""

    def work(first: int) -> list[tuple[int, np.ndarray]]:
        client = _client(triton, protocol)
        try:
            return [(k, client.embed(jobs[k])) for k in range(first, len(jobs), workers)]
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = [item for part in pool.map(work, range(workers)) for item in part]
    return [answer for _, answer in sorted(done, key=lambda item: item[0])]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_embeddings_equal_in_process_fp32_when_texts_are_real(
        triton: TritonServer, protocol: str, evaluation: list[str],
        expected: np.ndarray) -> None:
    got = np.concatenate(_embed_concurrently(triton, protocol, _chunks(evaluation)))
    assert got.shape == (len(evaluation), 384)
    similarity = cosine(expected, got)
    worst = int(similarity.argmin())
    assert similarity.min() >= 0.999, (worst, evaluation[worst])


def _refused(client: EmbeddingClient, array: np.ndarray, datatype: str = "BYTES") -> str:
    with pytest.raises(InferenceServerException) as caught:
        client.infer_array(array, datatype)
    assert str(caught.value.status()) in {"400", "StatusCode.INVALID_ARGUMENT"}, caught.value
    return str(caught.value.message())


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bad_inputs_get_clear_errors_and_the_server_keeps_serving(
        triton: TritonServer, protocol: str, evaluation: list[str],
        expected: np.ndarray) -> None:
    client = _client(triton, protocol)
    try:
        message = _refused(client, np.array([[b"fine"], [b""]], dtype=np.object_))
        assert "row 1" in message and "empty" in message
        message = _refused(client, np.array([[b"caf\xe9 au lait"]], dtype=np.object_))
        assert "not UTF-8" in message and "0xe9" in message
        message = _refused(client, np.array([[7]], dtype=np.int64), "INT64")
        assert "INT64" in message and "BYTES" in message
        message = _refused(client, np.array([[b"word"]] * 65, dtype=np.object_))
        assert "batch" in message and "64" in message
        np.testing.assert_allclose(client.embed(evaluation[:3]), expected[:3], atol=1e-4)
    finally:
        client.close()


def test_a_bad_request_fails_alone_when_batched_with_good_ones(
        triton: TritonServer, evaluation: list[str], expected: np.ndarray) -> None:
    def bad() -> str:
        client = _client(triton, "grpc")
        try:
            return _refused(client, np.array([[b"\xff\xfe"]], dtype=np.object_))
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=2) as pool:
        refused = pool.submit(bad)
        goods = pool.submit(_embed_concurrently, triton, "grpc",
                            [evaluation[4 * k:4 * k + 4] for k in range(8)])
        assert "not UTF-8" in refused.result()
        answers = goods.result()
    for k, answer in enumerate(answers):
        assert cosine(expected[4 * k:4 * k + 4], answer).min() >= 0.999


def test_embed_script_prints_json_and_exits_1_for_an_empty_text(triton: TritonServer) -> None:
    script = [sys.executable, str(PROJECT_ROOT / "scripts" / "embed.py"),
              "--protocol", "grpc", "--url", triton.grpc_url]
    done = subprocess.run([*script, "A for loop iterates.", "Tuples are immutable."],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["dimension"] == 384 and len(answer["embeddings"]) == 2
    refused = subprocess.run([*script, "fine", " "], capture_output=True, text=True,
                             timeout=60, check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: row 1: the text is empty")


def test_served_repository_holds_no_torch(triton: TritonServer) -> None:
    repository = Path(triton.settings.model_repository)
    assert {p.name for p in repository.iterdir()} >= {NAME}
    assert not [p for p in repository.rglob("*.py") if "import torch" in p.read_text()]
