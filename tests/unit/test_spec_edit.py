"""The comment-keeping edit of the spec file (tritonkit.spec_edit): one value changed, added or
removed, every other line and comment as written, flow mappings wrapped under their brace."""

from __future__ import annotations

import pytest
import yaml

from tritonkit.errors import SpecError
from tritonkit.spec_edit import LINE_LIMIT, set_in_text

STEP = ["models", "churn", "steps", "preprocess"]
BLOCK = ("models:\n  churn:\n    steps:\n      preprocess:  # fused\n        instances:\n"
         "          embedded: 2   # two\n          production: 2\n"
         "        dynamic_batching:\n          # no wait\n          max_queue_delay_us: 0\n"
         "      model:\n        instances: {embedded: 2, production: 1}\n")
FLOW = ("models:\n  churn:\n    steps:\n      preprocess:\n"
        "        dynamic_batching: {max_queue_delay_us: 0, preferred_batch_size: [8, 32]}  # kept\n"
        "        instances: {embedded: 2, production: 1}\n")


def test_set_in_text_keeps_comments_when_block_values_are_replaced_and_added() -> None:
    text = set_in_text(BLOCK, [*STEP, "instances", "embedded"], 1)
    batching = [*STEP, "dynamic_batching"]
    text = set_in_text(text, [*batching, "preferred_batch_size"], [8])
    text = set_in_text(text, [*batching, "max_queue_delay_us"], 200)
    text = set_in_text(text, [*batching, "queue"], {"max_size": 190, "timeout_us": 100_000})

    assert text == (
        "models:\n  churn:\n    steps:\n      preprocess:  # fused\n        instances:\n"
        "          embedded: 1   # two\n          production: 2\n"
        "        dynamic_batching:\n          # no wait\n          max_queue_delay_us: 200\n"
        "          preferred_batch_size: [8]\n"
        "          queue: {max_size: 190, timeout_us: 100000}\n"
        "      model:\n        instances: {embedded: 2, production: 1}\n")


def test_set_in_text_gives_the_text_back_when_an_added_key_is_removed() -> None:
    path = [*STEP, "dynamic_batching", "queue"]

    added = set_in_text(BLOCK, path, {"max_size": 5, "timeout_us": 100})

    assert added != BLOCK
    assert set_in_text(added, path, None) == BLOCK
    assert set_in_text(BLOCK, path, None) == BLOCK  # nothing to remove


def test_set_in_text_wraps_a_flow_mapping_under_its_brace_when_it_grows_past_the_limit() -> None:
    queue = {"max_size": 190, "timeout_us": 100_000}

    text = set_in_text(FLOW, [*STEP, "dynamic_batching", "queue"], queue)

    assert text == (
        "models:\n  churn:\n    steps:\n      preprocess:\n"
        "        dynamic_batching: {max_queue_delay_us: 0, preferred_batch_size: [8, 32],\n"
        "                           queue: {max_size: 190, timeout_us: 100000}}  # kept\n"
        "        instances: {embedded: 2, production: 1}\n")
    assert max(map(len, text.splitlines())) <= LINE_LIMIT
    loaded = yaml.safe_load(text)["models"]["churn"]["steps"]["preprocess"]
    assert loaded["dynamic_batching"]["queue"] == queue
    assert set_in_text(text, [*STEP, "dynamic_batching", "queue"], None) == FLOW


def test_set_in_text_keeps_quoted_commas_and_brackets_when_a_flow_entry_changes() -> None:
    text = 'a:\n  b: {name: "x, [y]", n: 1}\n'

    assert set_in_text(text, ["a", "b", "n"], 2) == 'a:\n  b: {name: "x, [y]", n: 2}\n'


def test_set_in_text_refuses_a_path_when_it_runs_through_a_scalar() -> None:
    with pytest.raises(SpecError, match="cannot edit"):
        set_in_text("a:\n  b: 1\n", ["a", "b", "c", "d"], 2)


def test_set_in_text_refuses_a_flow_mapping_when_its_brackets_do_not_balance() -> None:
    with pytest.raises(SpecError, match="unbalanced"):
        set_in_text("a:\n  b: {c: [1, 2}\n", ["a", "b", "c"], 3)
