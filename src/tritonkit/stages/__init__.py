"""Incremental build stages that every family uses: manifests that say what each stage was made
from (`manifest`), the source files a stage depends on, derived from its imports (`sources`),
and making and gating a model's ONNX variants (`variants`)."""
