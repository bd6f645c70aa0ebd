"""Triton python-backend step of a text-embedding model: tokenize a dynamic batch of texts, and
on a target that fuses python steps embed them too.

The builder copies this file as `<model>/<version>/model.py` with `text_tokenizer.py`
(tritonkit/text/tokenizer.py), `tokenizer.json` and `step_errors.py` beside it; it needs numpy
and tokenizers alone (the production image's requirements), never torch. A fused target serves
`text_embedding_fused.py` instead: this step with the encoder inside (`load_graph`), which adds
onnxruntime. Its config parameter `max_sequence_length` sets the truncation. One `execute`
call gets a dynamic batch of requests, each with `text` [rows, 1] (BYTES):

- every request's texts are checked first; a request with a bad text (not UTF-8, empty) gets an
  INVALID_ARG error (HTTP 400) naming the row and the problem, the others go on;
- the good texts are tokenized together, padded to the longest of the batch;
- fused: they are embedded in groups of alike lengths (`length_buckets`: one onnxruntime call
  per group, padded to the group's longest, not the batch's) and each request gets its rows of
  `embedding`;
  otherwise each request gets its rows of `input_ids` and `attention_mask` (all of one batch
  share one length, so the model step can batch them again);
- if that call raises, each request runs alone and only those that still fail get an error
  (HTTP 500, with onnxruntime's message), as in onnx_model.py.
"""

import json
import os

# One thread per instance: the instance count is the parallelism (as intra_op_num_threads=1);
# tokenizers' own thread pool would compete with the other instances for the same cores.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import triton_python_backend_utils as pb_utils
from step_errors import Refusals, answer_isolating, describe, error, log_error
from text_tokenizer import TextError, TextTokenizer, check_texts, length_buckets

INPUT = "text"


class TritonPythonModel:
    def initialize(self, args):
        self.model_name = args["model_name"]
        self.refusals = Refusals(self.model_name)
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.max_length = int(params["max_sequence_length"])
        self.outputs = [o["name"] for o in config["output"]]
        here = os.path.join(args["model_repository"], args["model_version"])
        self.tokenizer = TextTokenizer.from_file(os.path.join(here, "tokenizer.json"))
        self.session = self.load_graph(here, int(params.get("intra_op_num_threads", "1")))

    def load_graph(self, here, threads):
        """The onnxruntime session of the encoder this step runs after tokenizing: none here
        (the ids are the output); `text_embedding_fused.py` loads `model.onnx`."""
        return None

    def execute(self, requests):
        """Answer every request of a dynamic batch; one request's failure is its own alone."""
        responses = [None] * len(requests)
        good = []  # (request index, its texts)
        for i, request in enumerate(requests):
            try:
                tensor = pb_utils.get_input_tensor_by_name(request, INPUT)
                if tensor is None:
                    raise TextError(f"the request has no input {INPUT!r}")
                texts = check_texts(tensor.as_numpy())
            except TextError as exc:
                responses[i] = pb_utils.InferenceResponse(error=error(f"{INPUT}: {exc}"))
            except Exception as exc:  # a tensor the stub cannot hand over as numpy
                responses[i] = pb_utils.InferenceResponse(
                    error=error(f"could not read the input {INPUT!r}: {describe(exc)}"))
            else:
                good.append((i, texts))
        if good:
            answer_isolating(good, responses, self._answer,
                             lambda item, exc, responses: self._fail(item[0], exc, responses))
        self.refusals.count(responses)
        return responses

    def _answer(self, good, responses):
        """Tokenize (and embed) the texts of the requests `good` at once; fill their responses."""
        texts = [text for _, request_texts in good for text in request_texts]
        ids, mask = self.tokenizer.encode(texts, self.max_length)
        if self.session is not None:
            # one onnxruntime call per group of alike lengths, not one padded to the longest
            lengths = mask.sum(axis=1)
            embedding = None
            for rows in length_buckets(lengths):
                longest = int(lengths[rows].max())
                part = self.session.run(self.outputs, {"input_ids": ids[rows, :longest],
                                                       "attention_mask": mask[rows, :longest]})[0]
                if embedding is None:
                    embedding = np.empty((len(texts), part.shape[1]), dtype=part.dtype)
                embedding[rows] = part
            results = {self.outputs[0]: embedding}
        else:
            results = {"input_ids": ids, "attention_mask": mask}
        start = 0
        for i, request_texts in good:
            stop = start + len(request_texts)
            responses[i] = pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(name, np.ascontiguousarray(values[start:stop]))
                for name, values in results.items()
            ])
            start = stop

    def _fail(self, index, exc, responses):
        what = "onnxruntime" if self.session is not None else "the tokenizer"
        message = f"{self.model_name}: {what} failed on this request: {describe(exc)}"
        log_error(message)
        responses[index] = pb_utils.InferenceResponse(error=error(message, "INTERNAL"))
