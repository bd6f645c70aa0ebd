"""The tabular-classifier family: everything a model on a table of numbers and categories
needs, from its rows to its Triton steps. A model of this family is a spec entry
(`configs/models.yaml`: its `dataset`, `probability`, thresholds, variants) and, where its
data is not a CSV file, one loader module in `datasets/`.

- `datasets`: the rows (a loader or a CSV), typed and checked, split by a hash of the id
- `schema`: the features' bounds, whole-number flags, standardisation and vocabularies;
  validation and encoding (numpy alone: the python steps carry a copy)
- `contract`: what clients send and get back, from the spec alone
- `train`, `fallback`: the scikit-learn model and the gateway's small fallback model
- `export`: the ONNX core and its postprocessing head; `profile`: the drift reference
- `artifacts`: the versioned files under artifacts/<model>/<v>/ and the build stages
- `family`: `build` and `render` (the ensemble and its steps for a target)
"""
