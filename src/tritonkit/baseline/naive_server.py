"""The naive baseline: Flask + onnxruntime in one Python process, same API and same checks.

It answers the same KServe v2 JSON as the `churn` ensemble (`POST /v2/models/churn/infer`), with
the same validation (`tritonkit.tabular.schema`) and the same ONNX graph, one request at a time. The
benchmark suite (bench/suite.py, `make bench`) measures Triton against it::

    python -m tritonkit.baseline.naive_server --port 8500
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask, jsonify, request

from tritonkit.spec import load_spec
from tritonkit.tabular.artifacts import TabularArtifacts
from tritonkit.tabular.contract import contract
from tritonkit.tabular.export import predict, session
from tritonkit.tabular.schema import KSERVE_DATATYPES

CHURN = contract("churn")


def create_app(artifacts: TabularArtifacts) -> Flask:
    schema = artifacts.load_schema()
    sess = session(str(artifacts.onnx))
    app = Flask("naive_churn_server")

    @app.post("/v2/models/churn/infer")
    def infer() -> Any:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            return jsonify(error="request body must be KServe v2 JSON with an 'inputs' list"), 400
        columns: dict[str, np.ndarray] = {}
        try:
            for item in body["inputs"]:
                dtype = CHURN.numpy_dtypes.get(item["name"], np.object_)
                columns[item["name"]] = np.array(item["data"], dtype=dtype)
        except (KeyError, TypeError, ValueError) as exc:
            return jsonify(error=f"malformed input: {exc}"), 400
        problems = schema.validate(columns)
        if problems:
            return jsonify(error="; ".join(problems)), 400
        outputs = predict(sess, schema.encode(columns))
        rows = len(outputs[CHURN.probability])
        return jsonify(
            model_name="churn",
            outputs=[
                {"name": name, "datatype": KSERVE_DATATYPES[dtype], "shape": [rows, 1],
                 "data": outputs[name].reshape(-1).tolist()}
                for name, dtype in CHURN.outputs.items()
            ],
        )

    @app.get("/v2/health/ready")
    def ready() -> Any:
        return "", 200

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="Naive Flask + onnxruntime churn server.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=int, default=8500, help="port to bind")
    parser.add_argument("--artifacts", type=Path, default=None,
                        help="artefact folder (default: artifacts/churn/<spec version>)")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    version = load_spec().models["churn"].version
    artifacts = TabularArtifacts(args.artifacts or TabularArtifacts.for_version(version).root)
    create_app(artifacts).run(host=args.host, port=args.port, threaded=True)


if __name__ == "__main__":
    main()
