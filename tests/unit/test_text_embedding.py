"""The text_embedding family without a server: corpus, tokenizer parity with transformers, the
ONNX export against torch and its determinism, and the rendered configs of every layout.

The export stage runs once per session (about 45 s) unless `make build-engines` made it.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from tritonkit.errors import ArtifactMissingError
from tritonkit.repository.config import read_config
from tritonkit.spec import Spec, TextEmbedding, load_spec
from tritonkit.text import corpus
from tritonkit.text import family as text_embedding
from tritonkit.text.artifacts import TextEmbeddingArtifacts, export_stage
from tritonkit.text.embed import TextEmbedder, cosine
from tritonkit.text.export import export_onnx, source_folder
from tritonkit.text.tokenizer import (
    EmptyTextError,
    NotTextError,
    NotUtf8Error,
    check_texts,
)

NAME = "minilm"
#: Texts that stress the normaliser and truncation beside the corpus's plain English.
TRICKY = ["Ünïcödé naïve café — déjà vu.", "日本語のテキストです。", "x " * 300,
          "Tabs\tand\nnewlines\r\nin one text.",
          "EMOJI 🙂 and \uff26\uff35\uff2c\uff2c (fullwidth) letters."]


@pytest.fixture(scope="session")
def minilm_spec() -> Spec:
    """The spec with minilm only, served as FP32 everywhere (the variant stage is not needed)."""
    spec = load_spec().only(NAME)
    model = spec.models[NAME]
    variants = model.variants.model_copy(update={"serve": {t: "fp32" for t in spec.targets}})
    return spec.model_copy(update={"models": {NAME: model.model_copy(
        update={"variants": variants})}})


@pytest.fixture(scope="session")
def minilm(minilm_spec: Spec) -> TextEmbedding:
    model = minilm_spec.models[NAME]
    assert isinstance(model, TextEmbedding)
    return model


@pytest.fixture(scope="session")
def minilm_artifacts(minilm: TextEmbedding) -> TextEmbeddingArtifacts:
    paths = TextEmbeddingArtifacts.for_version(minilm.version, name=NAME)
    export_stage(NAME, minilm, paths)
    return paths.require()


@pytest.fixture(scope="session")
def evaluation() -> list[str]:
    return list(corpus.corpus_set("evaluation"))


def test_corpus_sets_are_disjoint_sized_and_stable() -> None:
    sets = {name: corpus.corpus_set(name) for name in corpus.SET_SIZES}
    for name, texts in sets.items():
        assert len(texts) == corpus.SET_SIZES[name]
        assert len(set(texts)) == len(texts)
        assert all("\n" not in t and t == " ".join(t.split()) for t in texts)
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not set(sets[a]) & set(sets[b]), f"{a} and {b} share texts"
    corpus.sentences.cache_clear()
    assert corpus.corpus_set("evaluation") == sets["evaluation"]


def test_corpus_set_refuses_unknown_names() -> None:
    with pytest.raises(KeyError, match="calibration"):
        corpus.corpus_set("training")


def test_tokenizer_ids_equal_transformers_when_batches_are_padded_and_truncated(
        minilm_artifacts: TextEmbeddingArtifacts, minilm: TextEmbedding,
        evaluation: list[str]) -> None:
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(source_folder(minilm.source_package)))
    ours = minilm_artifacts.load_tokenizer()
    length = minilm.max_sequence_length
    for start in range(0, len(evaluation), 64):
        batch = evaluation[start:start + 64] + TRICKY
        ids, mask = ours.encode(batch, length)
        expected = reference(batch, padding=True, truncation=True, max_length=length,
                             return_tensors="np")
        assert ids.dtype == mask.dtype == np.int64
        np.testing.assert_array_equal(ids, expected["input_ids"])
        np.testing.assert_array_equal(mask, expected["attention_mask"])
    assert ours.encode(["x " * 300], length)[0].shape == (1, length)
    assert ours.encode(["Short one."], length)[0].shape == (1, 5)


@pytest.mark.parametrize(("value", "error", "words"), [
    (b"ok \xff\xfe", NotUtf8Error, "not UTF-8 (byte 0xff at offset 3)"),
    ("", EmptyTextError, "empty"),
    (" \t ", EmptyTextError, "whitespace only"),
    (3.5, NotTextError, "got float"),
    (None, NotTextError, "got NoneType"),
])
def test_check_texts_names_the_row_and_problem_when_a_text_is_bad(
        value: object, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match="row 1") as caught:
        check_texts(np.array([b"fine", value], dtype=object))
    assert words in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_check_texts_refuses_no_texts_and_nested_arrays() -> None:
    with pytest.raises(EmptyTextError, match="no texts"):
        check_texts([])
    with pytest.raises(NotTextError, match=r"shape \[1, 2\]"):
        check_texts(np.array([[b"a", b"b"]], dtype=object))


def test_export_matches_torch_with_mean_pooling_when_texts_are_real(
        minilm_artifacts: TextEmbeddingArtifacts, minilm: TextEmbedding,
        evaluation: list[str]) -> None:
    """The graph against transformers' own encoder (default attention) pooled here in numpy,
    not against the wrapper it was traced from."""
    import torch
    from transformers import AutoModel

    folder = source_folder(minilm.source_package)
    encoder = AutoModel.from_pretrained(str(folder)).eval()
    tokenizer = minilm_artifacts.load_tokenizer()
    texts = evaluation[:96] + TRICKY
    ids, mask = tokenizer.encode(texts, minilm.max_sequence_length)
    with torch.no_grad():
        hidden = encoder(input_ids=torch.from_numpy(ids),
                         attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    expected = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    embedder = TextEmbedder.load(minilm_artifacts.variant("fp32"), minilm_artifacts.tokenizer,
                                 max_length=minilm.max_sequence_length)
    got = embedder.embed(texts, batch_size=16)
    assert got.shape == (len(texts), 384)
    assert cosine(expected, got).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    parity = json.loads(minilm_artifacts.metrics.read_text())["onnx_parity"]
    assert parity["texts"] == len(evaluation) and parity["min_cosine"] >= 0.9999


def test_export_writes_identical_bytes_when_run_twice(
        minilm_artifacts: TextEmbeddingArtifacts, minilm: TextEmbedding, tmp_path: Path) -> None:
    folder = source_folder(minilm.source_package)
    first = export_onnx(folder, tmp_path / "a.onnx", max_length=minilm.max_sequence_length)
    second = export_onnx(folder, tmp_path / "b.onnx", max_length=minilm.max_sequence_length)
    assert first.read_bytes() == second.read_bytes() == minilm_artifacts.variant(
        "fp32").read_bytes()


def test_export_stage_skips_when_its_inputs_are_unchanged(
        minilm_artifacts: TextEmbeddingArtifacts, minilm: TextEmbedding) -> None:
    before = {p: p.read_bytes() for p in minilm_artifacts.exported()}
    assert export_stage(NAME, minilm, minilm_artifacts) is False
    assert {p: p.read_bytes() for p in minilm_artifacts.exported()} == before


def test_artifacts_name_make_build_engines_when_missing(tmp_path: Path) -> None:
    paths = TextEmbeddingArtifacts.for_version(1, name=NAME, base=tmp_path)
    with pytest.raises(ArtifactMissingError, match="make build-engines"):
        paths.require()
    assert paths.variant("int8_dynamic") == tmp_path / NAME / "1" / "variants" / (
        "int8_dynamic.onnx")


def _render(spec: Spec, target: str, tmp_path: Path) -> dict[str, object]:
    model = spec.models[NAME]
    written = text_embedding.render(tmp_path, spec, target, NAME, model)  # type: ignore[arg-type]
    return {p.parent.name: read_config(p) for p in written}


def test_render_fuses_tokenizer_and_encoder_when_the_target_fuses_python_steps(
        minilm_spec: Spec, minilm_artifacts: TextEmbeddingArtifacts, tmp_path: Path) -> None:
    configs = _render(minilm_spec, "embedded", tmp_path)
    assert set(configs) == {"minilm", "minilm_fused"}
    ensemble, fused = configs["minilm"], configs["minilm_fused"]
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["minilm_fused"]
    assert [(i.name, i.data_type, list(i.dims)) for i in ensemble.input] == [("text", 13, [1])]
    assert [(o.name, o.data_type, list(o.dims)) for o in ensemble.output] == [
        ("embedding", 11, [384])]
    assert ensemble.max_batch_size == fused.max_batch_size == 64
    assert fused.backend == "python"
    assert fused.parameters["max_sequence_length"].string_value == "128"
    assert fused.instance_group[0].count == 2
    batching = minilm_spec.models["minilm"].steps.preprocess.dynamic_batching  # the fused step
    assert list(fused.dynamic_batching.preferred_batch_size) == list(
        batching.preferred_batch_size)
    assert fused.dynamic_batching.max_queue_delay_microseconds == batching.max_queue_delay_us
    assert [w.batch_size for w in fused.model_warmup] == [64, 16, 1]
    folder = tmp_path / "minilm_fused" / "1"
    assert (folder / "model.onnx").read_bytes() == minilm_artifacts.variant("fp32").read_bytes()
    assert {p.name for p in folder.iterdir()} == {
        "model.py", "step_errors.py", "text_tokenizer.py", "tokenizer.json", "model.onnx",
        "text_embedding_step.py", "onnx_session.py", "step_contract.py"}
    warm = (tmp_path / "minilm_fused" / "warmup" / "text").read_bytes()
    assert int.from_bytes(warm[:4], "little") == len(warm) - 4
    assert minilm_artifacts.load_tokenizer().token_count(warm[4:].decode()) >= 128


def test_render_splits_tokenizer_and_python_onnx_step_when_not_fused(
        minilm_spec: Spec, minilm_artifacts: TextEmbeddingArtifacts, tmp_path: Path) -> None:
    configs = _render(minilm_spec.with_fused_steps("embedded", False), "embedded", tmp_path)
    assert set(configs) == {"minilm", "minilm_preprocess", "minilm_model"}
    steps = configs["minilm"].ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["minilm_preprocess", "minilm_model"]
    assert dict(steps[0].output_map) == dict(steps[1].input_map) == {
        "input_ids": "input_ids", "attention_mask": "attention_mask"}
    pre, model = configs["minilm_preprocess"], configs["minilm_model"]
    assert [(o.name, o.data_type, list(o.dims)) for o in pre.output] == [
        ("input_ids", 9, [-1]), ("attention_mask", 9, [-1])]
    assert model.backend == "python" and not (tmp_path / "minilm_preprocess" / "1" /
                                              "model.onnx").exists()
    assert "onnxruntime" in (tmp_path / "minilm_model" / "1" / "model.py").read_text()


def test_render_serves_native_onnxruntime_with_tensorrt_warmed_at_profile_corners(
        minilm_spec: Spec, minilm_artifacts: TextEmbeddingArtifacts, tmp_path: Path) -> None:
    configs = _render(minilm_spec, "production", tmp_path)
    model = configs["minilm_model"]
    assert model.platform == "onnxruntime_onnx" and model.instance_group[0].kind == 1  # GPU
    (accelerator,) = model.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert accelerator.parameters["precision_mode"] == "FP32"
    shapes = [(w.batch_size, list(w.inputs["input_ids"].dims)) for w in model.model_warmup]
    assert shapes[:2] == [(64, [128]), (1, [3])]  # the profile's corners first
    assert {b for b, _ in shapes} >= {1, 16, 64}
    warmup = tmp_path / "minilm_model" / "warmup"
    for w in model.model_warmup:
        for tensor in w.inputs.values():
            size = (warmup / tensor.input_data_file).stat().st_size
            assert size == 8 * tensor.dims[0]
    ids = np.frombuffer((warmup / "shortest_input_ids").read_bytes(), dtype="<i8")
    assert ids[0] == 101 and ids[-1] == 102
    assert configs["minilm_preprocess"].backend == "python"


def test_rendered_steps_never_import_torch(minilm_spec: Spec,
                                           minilm_artifacts: TextEmbeddingArtifacts,
                                           tmp_path: Path) -> None:
    for target, spec in (("embedded", minilm_spec),
                         ("embedded", minilm_spec.with_fused_steps("embedded", False)),
                         ("production", minilm_spec)):
        out = tmp_path / f"{target}-{spec.targets['embedded'].fuse_python_steps}"
        _render(spec, target, out)
        for source in out.rglob("*.py"):
            imported = set()
            for node in ast.walk(ast.parse(source.read_text())):
                if isinstance(node, ast.Import):
                    imported |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module:
                    imported.add(node.module.split(".")[0])
            assert not imported & {"torch", "transformers", "tritonkit"}, source


def test_length_buckets_cover_every_row_once_within_the_tolerance_when_lengths_vary() -> None:
    from tritonkit.text.tokenizer import length_buckets

    lengths = np.array([12, 3, 40, 13, 128, 11, 39, 3, 100])
    groups = length_buckets(lengths, tolerance=0.25)
    assert sorted(int(r) for g in groups for r in g) == list(range(len(lengths)))
    for group in groups:
        assert lengths[group].max() <= lengths[group].min() * 1.25
    assert len(groups) < len(lengths)  # alike lengths share a call
