"""Serving-side tokenization: texts in, padded `input_ids` and `attention_mask` (INT64) out.

It needs numpy and `tokenizers` (Rust; the text checks need numpy alone), never torch or
transformers, and imports nothing from tritonkit: the repository builder copies this file into
the python steps as `text_tokenizer.py`. Texts are checked first, each failure a `TextError`
(a ValueError) whose message names the row and the problem; a batch is padded to its longest
text and truncated at `max_length` tokens::

    tokenizer = TextTokenizer.from_file(Path("artifacts/minilm/1/tokenizer.json"))
    texts = check_texts(np.array([b"Hello world."], dtype=object))   # -> ["Hello world."]
    input_ids, attention_mask = tokenizer.encode(texts, max_length=128)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


class TextError(ValueError):
    """A text that cannot be embedded; the message names its row and the problem."""


class NotTextError(TextError):
    """The value is neither a string nor UTF-8 bytes (a number, None, a nested list)."""


class NotUtf8Error(TextError):
    """Bytes that do not decode as UTF-8."""


class EmptyTextError(TextError):
    """An empty text, or one of whitespace alone: there is nothing to embed."""


def check_text(value: Any, row: int = 0) -> str:
    """`value` as a non-empty str; bytes (what Triton hands a step) are decoded as UTF-8.

    Raises:
        NotTextError, NotUtf8Error, EmptyTextError: naming `row` and what is wrong.
    """
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        try:
            text = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = bytes(value)[exc.start:exc.start + 1]
            raise NotUtf8Error(
                f"row {row}: the text is not UTF-8 (byte 0x{bad.hex()} at offset {exc.start}); "
                "send UTF-8 encoded text") from None
    elif isinstance(value, str):
        text = value
    else:
        raise NotTextError(
            f"row {row}: expected a text (str or UTF-8 bytes), got {type(value).__name__} "
            f"{_short(value)}")
    if not text.strip():
        raise EmptyTextError(f"row {row}: the text is empty{' (whitespace only)' if text else ''}"
                             "; send at least one word")
    return text


def check_texts(values: Iterable[Any] | np.ndarray) -> list[str]:
    """Every value of a 1-D list or an [n] / [n, 1] array as a str (see `check_text`).

    Raises:
        TextError: the first bad value, naming its row.
    """
    if isinstance(values, np.ndarray):
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        elif values.ndim != 1:
            raise NotTextError(f"expected one text per row, got an array of shape "
                               f"{list(values.shape)}")
    texts = [check_text(value, row) for row, value in enumerate(values)]
    if not texts:
        raise EmptyTextError("no texts: send at least one")
    return texts


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class TextTokenizer:
    """A `tokenizers.Tokenizer` loaded from `tokenizer.json`, set to pad to the longest text of
    each batch (the file itself may pad to a fixed length) and to truncate at `max_length`."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._max_length: int | None = None
        padding = tokenizer.padding or {}
        self._pad_id = int(padding.get("pad_id", 0))
        self._pad_token = str(padding.get("pad_token", "[PAD]"))
        # None: pad each batch to its longest text, not to the file's fixed length.
        tokenizer.enable_padding(pad_id=self._pad_id, pad_token=self._pad_token, length=None)

    @classmethod
    def from_file(cls, path: Path | str) -> TextTokenizer:
        """Load `tokenizer.json`; raises FileNotFoundError naming the path."""
        from tokenizers import Tokenizer  # here: the text checks above need numpy alone

        if not Path(path).is_file():
            raise FileNotFoundError(f"tokenizer file {path} not found")
        return cls(Tokenizer.from_file(str(path)))

    def encode(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), both int64 [len(texts), longest], truncated at
        `max_length` tokens ([CLS] and [SEP] included).

        Texts must have passed `check_texts` (a non-str raises NotTextError here too).
        """
        if max_length < 3:
            raise ValueError(f"max_length must leave room for [CLS], a token and [SEP], got "
                             f"{max_length}")
        if not texts:
            raise EmptyTextError("no texts: send at least one")
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                check_text(text, row)  # raises, naming the row
        if max_length != self._max_length:
            self._tokenizer.enable_truncation(max_length=max_length)
            self._max_length = max_length
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return ids, mask

    def token_count(self, text: str) -> int:
        """Tokens of one text before truncation ([CLS] and [SEP] included)."""
        self._tokenizer.no_truncation()
        self._max_length = None
        return len(self._tokenizer.encode(text).ids)


def length_buckets(lengths: Sequence[int] | np.ndarray, tolerance: float = 0.25
                   ) -> list[np.ndarray]:
    """Rows of a batch grouped so that each group's longest text is at most `1 + tolerance`
    times its shortest: one onnxruntime call per group, padded to the group's longest.

    A batch padded to its longest text spends most of its work on padding when lengths vary
    (attention grows with the square of the length); on these CPUs a padded batch of 16
    sentences cost more per text than 16 single calls (`make bench-variants`). Groups of alike
    lengths keep what batching saves and lose little to padding::

        for rows in length_buckets(mask.sum(axis=1)):
            longest = int(mask[rows].sum(axis=1).max())
            session.run(None, {"input_ids": ids[rows, :longest], ...})
    """
    order = np.argsort(np.asarray(lengths), kind="stable")
    groups: list[list[int]] = []
    shortest = 0
    for row in order:
        length = int(lengths[row])
        if not groups or length > shortest * (1.0 + tolerance):
            groups.append([])
            shortest = length
        groups[-1].append(int(row))
    return [np.array(g, dtype=np.int64) for g in groups]
