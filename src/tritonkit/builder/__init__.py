"""Build orchestration: incremental stages with manifests, the shared variant stage, model
cards, and `tritonkit build` (`make build-engines`)."""
