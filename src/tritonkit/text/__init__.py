"""Text models: the corpus of real sentences, the serving tokenizer, the ONNX export (torch only
there), in-process embeddings and the artefacts of a text-embedding model.

    from tritonkit.text.corpus import corpus_set
    from tritonkit.text.tokenizer import TextTokenizer
    from tritonkit.text.artifacts import TextEmbeddingArtifacts
"""
