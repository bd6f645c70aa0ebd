"""The build's top floor: `tritonkit build` (`make build-engines`) and the model cards. It calls
each model's family (`tritonkit.families`), which runs the stages (`tritonkit.stages`)."""
