"""The text-embedding family (all-MiniLM-L6-v2): export and gate its variants, and render its
ensemble for a target.

The ensemble `<name>` takes `text` (BYTES, dims [1]: one text per row) and answers `embedding`
(FP32, dims [384], L2-normalised). Its steps:

- fused (`fuse_python_steps`, embedded): `<name>_fused`, one python step that tokenizes the whole
  dynamic batch and runs the served variant with onnxruntime
  (repository/steps/text_embedding_fused.py);
- split, python runtime: `<name>_preprocess` (the same step without a graph: it tokenizes) then
  `<name>_model` (onnx_model.py running the variant);
- production (native onnxruntime on GPUs): `<name>_preprocess` (python tokenizer) then
  `<name>_model` on Triton's onnxruntime backend with the TensorRT accelerator (or a TensorRT
  engine where the spec serves one).

No step imports torch. ::

    build("minilm", spec.models["minilm"])                        # incremental
    render(Path("model_repository"), spec, "embedded", "minilm", spec.models["minilm"])
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np

from tritonkit.repository import config as cfg
from tritonkit.repository.layout import ONNX_SESSION, STEPS_DIR, clear, copy_step, step_names
from tritonkit.spec import TENSORRT_VARIANTS, Spec, TargetName, TextEmbedding
from tritonkit.text import tokenizer as tokenizer_module
from tritonkit.text.artifacts import TextEmbeddingArtifacts, export_stage
from tritonkit.text.tokenizer import TextTokenizer

logger = logging.getLogger(__name__)

TEXT = cfg.tensor("text", "TYPE_STRING", [1])
IDS = ("input_ids", "attention_mask")
#: Texts per onnxruntime call when a variant is gated and when calibration feeds are made.
BATCH = 32


def build(name: str, model: TextEmbedding, *, force: bool = False) -> dict[str, Any]:
    """Export and check the FP32 graph where its inputs changed, then make and gate the
    variants against it on the evaluation texts (calibration: the calibration texts)."""
    paths = TextEmbeddingArtifacts.for_version(model.version, name=name)
    exported = export_stage(name, model, paths, force=force)
    variants = build_text_variants(name, model, paths, force=force or exported)
    return {"model": name, "exported": exported, **variants}


def build_text_variants(name: str, model: TextEmbedding, paths: TextEmbeddingArtifacts, *,
                        force: bool = False) -> dict[str, Any]:
    """The shared variant stage, fed with tokenized calibration texts and gated by cosine
    similarity to the FP32 graph's embeddings of the evaluation texts."""
    from tritonkit.stages.manifest import Manifest
    from tritonkit.stages.variants import build_variants
    from tritonkit.text.embed import TextEmbedder
    from tritonkit.variants.gates import EmbeddingLimits, GateResult, embedding_gate

    paths.require()
    tokenizer = paths.load_tokenizer()
    evaluation = paths.read_texts("evaluation")
    length = model.max_sequence_length

    def calibration() -> list[dict[str, np.ndarray]]:
        texts = paths.read_texts("calibration")
        feeds = []
        for start in range(0, len(texts), BATCH):
            ids, mask = tokenizer.encode(texts[start:start + BATCH], length)
            feeds.append({IDS[0]: ids, IDS[1]: mask})
        return feeds

    def embed(path: Path) -> np.ndarray:
        return TextEmbedder.load(path, paths.tokenizer, max_length=length).embed(
            evaluation, batch_size=BATCH)

    reference = functools.cache(lambda: embed(paths.variant("fp32")))
    limits = EmbeddingLimits(min_mean_cosine=model.gate.min_mean_cosine,
                             min_cosine=model.gate.min_cosine)

    def gate(variant: str, path: Path) -> GateResult:
        logger.info("%s: gating %s on %d texts", name, variant, len(evaluation))
        try:
            embeddings = embed(path)
        except Exception as exc:  # onnxruntime refuses the graph: the variant cannot be served
            message = f"{variant}: onnxruntime cannot run it: {' '.join(str(exc).split())}"
            return GateResult(variant, False, {}, dataclasses.asdict(limits), message,
                              (message,))
        return embedding_gate(variant, reference(), embeddings, limits)

    return build_variants(name, model, root=paths.root, fp32=paths.variant("fp32"),
                          calibration=calibration, gate=gate,
                          manifest=Manifest.load(paths.manifest), force=force)


def _bytes_element(text: str) -> bytes:
    """One BYTES element as Triton's warm-up files hold it: 4-byte little-endian length, bytes."""
    raw = text.encode("utf-8")
    return struct.pack("<I", len(raw)) + raw


def _long_text(texts: list[str], tokenizer: TextTokenizer, max_length: int) -> str:
    """Real sentences joined until they fill `max_length` tokens (the longest a step sees)."""
    joined = ""
    for text in texts:
        joined = f"{joined} {text}".strip()
        if tokenizer.token_count(joined) >= max_length:
            break
    return joined


def _shortest_ids(texts: list[str], tokenizer: TextTokenizer) -> np.ndarray:
    """Ids of a one-token real word: [CLS] word [SEP], the shortest sequence a step sees."""
    for word in (w.strip(".,;:\"'()") for text in texts for w in text.split()):
        if word and tokenizer.token_count(word) == 3:
            return tokenizer.encode([word], 3)[0][0]
    return tokenizer.encode([texts[0]], 3)[0][0]


def _text_warmup(step_dir: Path, model: TextEmbedding, long_text: str) -> list[dict[str, object]]:
    """One sample per warm-up batch size, each row the same long real text (Triton repeats a
    sample's data for every row): the largest shapes come first, so memory is sized once."""
    if not model.warmup_batch_sizes:
        return []
    (step_dir / "warmup").mkdir(parents=True, exist_ok=True)
    (step_dir / "warmup" / "text").write_bytes(_bytes_element(long_text))
    inputs = {"text": {"data_type": "TYPE_STRING", "dims": [1], "input_data_file": "text"}}
    return [{"name": f"long_text_batch_{b}", "batch_size": b, "inputs": inputs}
            for b in sorted(model.warmup_batch_sizes, reverse=True)]


def _ids_warmup(step_dir: Path, model: TextEmbedding, long_ids: np.ndarray,
                short_ids: np.ndarray) -> list[dict[str, object]]:
    """Warm-up of the model step with real token ids. First max_batch_size rows of
    max_sequence_length tokens, then one row of the shortest sequence: with dynamic shapes,
    onnxruntime's TensorRT accelerator widens its optimization profile to every shape it has
    seen and rebuilds the engine when one falls outside, so these two corners make the profile
    [1..max_batch_size] x [3..max_sequence_length] before traffic (two builds, at load, cached
    under engine_cache_path) and no request builds one. Then the spec's warm-up batch sizes."""
    folder = step_dir / "warmup"
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    shapes = [("longest", model.max_batch_size, long_ids), ("shortest", 1, short_ids)]
    shapes += [("longest", b, long_ids) for b in sorted(model.warmup_batch_sizes, reverse=True)
               if b != model.max_batch_size]
    for kind, batch, ids in shapes:
        for tensor, values in ((IDS[0], ids), (IDS[1], np.ones_like(ids))):
            (folder / f"{kind}_{tensor}").write_bytes(values.astype("<i8").tobytes())
        samples.append({
            "name": f"{kind}_{ids.size}_tokens_batch_{batch}", "batch_size": batch,
            "inputs": {t: {"data_type": "TYPE_INT64", "dims": [int(ids.size)],
                           "input_data_file": f"{kind}_{t}"} for t in IDS}})
    return samples


def render(repository: Path, spec: Spec, target_name: TargetName, name: str,
           model: TextEmbedding) -> list[Path]:
    """Write the ensemble and its steps for `target_name`; returns the config.pbtxt paths."""
    target = spec.targets[target_name]
    paths = TextEmbeddingArtifacts.for_version(model.version, name=name).require()
    variant = model.variants.serve[target_name]
    tokenizer = paths.load_tokenizer()
    warmup_texts = paths.read_texts("warmup")
    long_text = _long_text(warmup_texts, tokenizer, model.max_sequence_length)
    names = step_names(name)
    version = str(model.version)
    clear(repository, name)
    written = []
    length = {"max_sequence_length": str(model.max_sequence_length)}
    id_tensors = [cfg.tensor(t, "TYPE_INT64", [-1]) for t in IDS]
    embedding = cfg.tensor("embedding", "TYPE_FP32", [paths.dimension()])
    text_files = [(Path(tokenizer_module.__file__), "text_tokenizer.py"),
                  (paths.tokenizer, "tokenizer.json")]

    # the text step: tokenizes on every target; with the served variant inside when fused
    fused = target.fuse_python_steps
    pre_name = names["fused"] if fused else names["preprocess"]
    pre_dir = repository / pre_name
    if fused:
        copy_step("text_embedding_fused.py", pre_dir / version, [
            *text_files, (STEPS_DIR / "text_embedding.py", "text_embedding_step.py"),
            ONNX_SESSION])
        shutil.copy2(paths.require_variant(variant), pre_dir / version / "model.onnx")
    else:
        copy_step("text_embedding.py", pre_dir / version, text_files)
    written.append(cfg.write_config(cfg.python_step_config(
        name=pre_name, model=model, step=model.steps.preprocess, target=target_name,
        inputs=[TEXT], outputs=[embedding] if fused else id_tensors,
        parameters={**length, "intra_op_num_threads": "1"},
        warmup=_text_warmup(pre_dir, model, long_text)), pre_dir))
    steps: list[tuple[str, dict[str, str], dict[str, str]]] = [
        (pre_name, {"text": "text"},
         {"embedding": "embedding"} if fused else {t: t for t in IDS})]

    if not fused:
        model_dir = repository / names["model"]
        (model_dir / version).mkdir(parents=True)
        long_ids = tokenizer.encode([long_text], model.max_sequence_length)[0][0]
        warmup = _ids_warmup(model_dir, model, long_ids, _shortest_ids(warmup_texts, tokenizer))
        common = {"name": names["model"], "model": model, "step": model.steps.model,
                  "target": target_name, "inputs": id_tensors, "outputs": [embedding],
                  "warmup": warmup}
        if target.onnx_runtime == "python":
            copy_step("onnx_model.py", model_dir / version, [ONNX_SESSION])
            shutil.copy2(paths.require_variant(variant), model_dir / version / "model.onnx")
            model_config = cfg.python_step_config(
                **common, parameters={"intra_op_num_threads": "1"})
        elif variant in TENSORRT_VARIANTS:
            from tritonkit.stages.variants import engines_of

            engines = engines_of(paths.root, variant)
            for plan in engines.values():
                shutil.copy2(paths.root / "engines" / plan, model_dir / version / plan)
            model_config = cfg.tensorrt_plan_config(**common, engines=engines)
        else:
            shutil.copy2(paths.require_variant(variant), model_dir / version / "model.onnx")
            model_config = cfg.onnx_step_config(**common, gpu=target.gpu, variant=variant)
        written.append(cfg.write_config(model_config, model_dir))
        steps.append((names["model"], {t: t for t in IDS}, {"embedding": "embedding"}))

    # the ensemble clients call
    ensemble_dir = repository / names["ensemble"]
    (ensemble_dir / version).mkdir(parents=True)
    written.append(cfg.write_config(cfg.ensemble_config(
        name=names["ensemble"], max_batch_size=model.max_batch_size, inputs=[TEXT],
        outputs=[embedding], steps=steps, response_cache=model.response_cache), ensemble_dir))
    return written

