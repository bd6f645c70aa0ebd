"""Real English sentences for calibration, evaluation and warm-up, offline and deterministic.

The texts come from Python's own documentation as the standard library ships it
(`pydoc_data.topics.topics`, ~465k characters): prose paragraphs are split into sentences,
cleaned, deduplicated and put in a stable order (by sha256 of the text), then cut into disjoint
named sets. They are real texts, but a narrow domain (Python docs): figures measured on them
say how a variant behaves on technical English, not on chat, search queries or other languages.
The sentences change only with Python's documentation, i.e. with the Python version::

    texts = corpus_set("evaluation")        # 512 sentences, the same on every run
    calibration = corpus_set("calibration")
    assert not set(texts) & set(calibration)
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re

logger = logging.getLogger(__name__)

#: Sizes of the named sets, in order of the sorted sentences (disjoint slices).
SET_SIZES: dict[str, int] = {
    # INT8 calibration: activation ranges of static quantization.
    "calibration": 256,
    # The accuracy gate and benchmarks: every variant against FP32 on these.
    "evaluation": 512,
    # Triton warm-up samples (up to max_batch_size texts in one sample).
    "warmup": 64,
}
MIN_CHARS = 40
MAX_CHARS = 400
MIN_WORDS = 6

_UNDERLINE = re.compile(r"[*=\-~^\"]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"])")


def _paragraphs(text: str) -> list[str]:
    """Prose paragraphs of one topic: no headings, code, grammar or indented lists."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line for line in block.split("\n") if line.strip()]
        if not lines or any(line.startswith((" ", "\t")) for line in lines):
            continue  # code, grammar productions, notes and list items are indented
        if any(_UNDERLINE.fullmatch(line.strip()) for line in lines):
            continue  # a heading and its underline
        joined = ""
        for line in lines:
            line = line.strip()
            # A line that ends in a hyphen was wrapped inside a hyphenated word.
            joined += line if joined.endswith("-") or not joined else " " + line
        out.append(joined)
    return out


def _clean(sentence: str) -> str | None:
    """The sentence with its whitespace collapsed, or None when it is not plain prose."""
    sentence = " ".join(sentence.split())
    if not MIN_CHARS <= len(sentence) <= MAX_CHARS or len(sentence.split()) < MIN_WORDS:
        return None
    if sentence[-1] not in ".?!" or ">>>" in sentence or "::=" in sentence:
        return None
    return sentence


@functools.cache
def sentences() -> tuple[str, ...]:
    """Every distinct prose sentence of the documentation, ordered by sha256 of its text.

    The hash order spreads each topic over all the sets and does not depend on dict order.
    """
    from pydoc_data.topics import topics

    seen: set[str] = set()
    for key in sorted(topics):
        for paragraph in _paragraphs(topics[key]):
            for raw in _SENTENCE_END.split(paragraph):
                sentence = _clean(raw)
                if sentence is not None:
                    seen.add(sentence)
    ordered = sorted(seen, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    logger.debug("%d distinct sentences from pydoc_data.topics", len(ordered))
    return tuple(ordered)


def corpus_set(name: str) -> tuple[str, ...]:
    """The named set (`calibration`, `evaluation`, `warmup`): disjoint slices of `sentences()`.

    Raises:
        KeyError: `name` is not one of SET_SIZES.
        ValueError: the documentation holds too few sentences for every set.
    """
    if name not in SET_SIZES:
        raise KeyError(f"no corpus set {name!r}; the sets are {sorted(SET_SIZES)}")
    everything = sentences()
    needed = sum(SET_SIZES.values())
    if len(everything) < needed:
        raise ValueError(f"pydoc_data.topics gave {len(everything)} sentences, fewer than the "
                         f"{needed} the sets need: shrink SET_SIZES")
    start = 0
    for set_name, size in SET_SIZES.items():
        if set_name == name:
            return everything[start:start + size]
        start += size
    raise AssertionError("unreachable")
