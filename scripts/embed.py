#!/usr/bin/env python3
"""Embed texts through a text-embedding ensemble (`minilm`) and print them as JSON.

    python scripts/embed.py "How do I open a file?" "A for loop iterates."
    python scripts/embed.py --file texts.txt --protocol grpc --url 127.0.0.1:8001
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from tritonkit.client.command_line import (
    EXIT_BAD_INPUT,
    add_server_options,
    exit_on_failure,
    fail,
    server_url,
)
from tritonkit.client.embedding import (
    DEFAULT_MODEL,
    MAX_ROWS_PER_REQUEST,
    EmbeddingClient,
    TextError,
)

EPILOG = """\
output: one JSON object on stdout, {"model", "dimension", "embeddings": [{"text", "embedding"}]}
exit codes:
  0  every text was embedded
  1  bad input: the file is missing or not UTF-8, no texts, a text is empty (the error names
     its row), or the server refused a text
  2  bad command line
  3  the server cannot be reached or did not answer in time: is `make up` running?
  4  the server failed on a valid request (e.g. the model is not loaded)
Every failure is one line on stderr, starting with "error:".
"""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("texts", nargs="*", help="texts to embed (or --file)")
    parser.add_argument("--file", type=Path, default=None,
                        help="a UTF-8 file with one text a line (blank lines are skipped)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the ensemble to call")
    add_server_options(parser)
    parser.add_argument("--batch-size", type=int, default=MAX_ROWS_PER_REQUEST,
                        help="texts per request (at most the model's max_batch_size)")
    parser.add_argument("--timeout-s", type=float, default=10.0,
                        help="per-request timeout in seconds")
    args = parser.parse_args()
    if args.batch_size < 1:
        parser.error(f"--batch-size must be 1 or more, not {args.batch_size}")
    url = server_url(parser, args)

    texts = list(args.texts)
    if args.file is not None:
        try:
            texts += [line for line in args.file.read_text(encoding="utf-8").splitlines()
                      if line.strip()]
        except OSError as exc:
            return fail(f"cannot read {args.file}: {exc.strerror or exc}", EXIT_BAD_INPUT)
        except UnicodeDecodeError as exc:
            return fail(f"{args.file} is not UTF-8 (byte offset {exc.start})", EXIT_BAD_INPUT)
    if not texts:
        return fail("no texts: give them as arguments or with --file", EXIT_BAD_INPUT)

    client = EmbeddingClient(url, protocol=args.protocol, model=args.model,
                             timeout_s=args.timeout_s, batch_size=args.batch_size)
    with exit_on_failure(TextError), contextlib.closing(client):
        vectors = client.embed(texts)
    print(json.dumps({
        "model": args.model,
        "dimension": int(vectors.shape[1]),
        "embeddings": [{"text": t, "embedding": [round(float(x), 7) for x in v]}
                       for t, v in zip(texts, vectors, strict=True)],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
