"""A targeted edit of a YAML file that keeps every comment and every other line as written: the
spec (configs/models.yaml) is read by people, so a tool that changes one value (`make tune`)
must not re-dump the whole file. Values are written in the spec's flow style ([8, 32],
{max_size: 5, timeout_us: 100}); a flow mapping that grows past LINE_LIMIT is wrapped under its
brace::

    text = set_in_text(text, ["models", "churn", "steps", "preprocess", "instances",
                              "embedded"], 3)
    text = set_in_text(text, [..., "dynamic_batching", "queue"], None)   # the key removed

A shape the edit does not understand raises `SpecError`, so a file is never half-written; load
the result back (`load_spec`) to check it reads as intended.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

from tritonkit.errors import SpecError

#: Columns the spec file keeps to; a flow mapping that grows past it is wrapped.
LINE_LIMIT = 100


def _flow(value: Any) -> str:
    """`value` as YAML flow text, in the spec file's style ([8, 32], {max_size: 5, ...})."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value if re.fullmatch(r"[A-Za-z_][\w.-]*", value) else json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} into the spec")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _structure(text: str, start: int = 0) -> Iterator[tuple[int, int, bool]]:
    """(index, depth after it, outside quotes) of each character of text[start:]: the depth
    counts the flow collections ([ and {) open; quoted characters and the quotes are inside."""
    depth, quote = 0, ""
    for i in range(start, len(text)):
        char = text[i]
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        else:
            if char in "[{":
                depth += 1
            elif char in "]}":
                depth -= 1
            yield i, depth, True
            continue
        yield i, depth, False


def _flow_end(text: str, start: int) -> int:
    """Index just past the flow collection opening at text[start] (quotes respected)."""
    for i, depth, plain in _structure(text, start):
        if plain and depth == 0 and text[i] in "]}":
            return i + 1
    raise SpecError(f"unbalanced flow collection in the spec near {text[start:start + 60]!r}")


def _split_entries(body: str) -> list[str]:
    """The top-level entries of a flow mapping's body (between its braces)."""
    entries, current = [], ""
    for i, depth, plain in _structure(body):
        if plain and depth == 0 and body[i] == ",":
            entries.append(current.strip())
            current = ""
        else:
            current += body[i]
    if current.strip():
        entries.append(current.strip())
    return entries


def _wrap(prefix: str, entries: list[str], suffix: str) -> list[str]:
    """`prefix{a, b, ...}suffix`, wrapped at LINE_LIMIT under the brace, as the spec does."""
    pad = " " * (len(prefix) + 1)
    lines, current = [], prefix + "{"
    for k, entry in enumerate(entries):
        piece = entry + ("," if k < len(entries) - 1 else "")
        if current == prefix + "{":
            current += piece
        elif len(current) + 1 + len(piece) + 1 > LINE_LIMIT:
            lines.append(current)
            current = pad + piece
        else:
            current += " " + piece
    lines.append(current + "}" + suffix)
    return lines


def _edit_flow(joined: str, value_start: int, key: str, value: Any) -> str | None:
    """`joined` (a key's lines) with `key` of the flow mapping at value_start set (None:
    removed); the other entries as written. None when nothing changes."""
    stop = _flow_end(joined, value_start)
    written = _split_entries(joined[value_start + 1:stop - 1])
    entries = [e for e in written if not re.match(rf"{re.escape(key)}\s*:", e)]
    if value is not None:
        entry = f"{key}: {_flow(value)}"
        at = next((k for k, e in enumerate(written) if re.match(rf"{re.escape(key)}\s*:", e)),
                  len(written))
        entries.insert(at, entry)
    if entries == written:
        return None
    tail = joined[stop:]
    first_line_end = tail.find("\n")
    suffix, rest = (tail, "") if first_line_end < 0 else (tail[:first_line_end],
                                                          tail[first_line_end:])
    return "\n".join(_wrap(joined[:value_start], entries, suffix)) + rest


def set_in_text(text: str, path: Sequence[str], value: Any) -> str:
    """`text` with the value at `path` set (None removes the key), every other line as it was.

    Block mappings are walked by indentation. The last key may sit in a block mapping (its
    value replaced, or a line added at the end of its mapping) or one level inside a flow
    mapping (`{a: 1, b: []}`, possibly wrapped over lines, its other entries kept as written).
    Anything else raises, so a spec the edit does not understand is never half-written.
    """
    lines = text.splitlines(keepends=True)
    begin, end, indent = 0, len(lines), -1  # the block searched, and its parent's indent
    for depth, key in enumerate(path):
        last = depth == len(path) - 1
        content = [i for i in range(begin, end) if _is_content(lines[i])]
        child_indent = min((_indent(lines[i]) for i in content), default=indent + 2)
        found = next((i for i in content if _indent(lines[i]) == child_indent
                      and re.match(rf"\s*{re.escape(key)}:(\s|$)", lines[i])), None)
        if found is None:  # a new key at the end of this block mapping
            if value is None:
                return text
            nested = value
            for inner in reversed(path[depth + 1:]):
                nested = {inner: nested}
            at = content[-1] + 1 if content else begin
            added = " " * child_indent + f"{key}: {_flow(nested)}\n"
            return "".join([*lines[:at], added, *lines[at:]])
        head = lines[found]
        colon = head.index(":", _indent(head)) + 1
        # the key's lines: everything more indented after it (comments and blanks inside too)
        block_end = found + 1
        while block_end < end and (not _is_content(lines[block_end])
                                   or _indent(lines[block_end]) > child_indent):
            block_end += 1
        while block_end > found + 1 and not _is_content(lines[block_end - 1]):
            block_end -= 1
        inline = head[colon:].strip()
        value_start = colon + len(head[colon:]) - len(head[colon:].lstrip(" "))
        if inline and not inline.startswith("#"):  # the value is on the key's line
            if last and value is None:
                return "".join(lines[:found] + lines[block_end:])
            if last and inline[0] not in "[{":  # a scalar; a comment after it is kept
                comment = re.search(r"\s+#.*$", head[value_start:].rstrip("\n"))
                new = head[:value_start] + _flow(value) + (comment.group(0) if comment else "")
                return "".join([*lines[:found], new + "\n", *lines[found + 1:]])
            joined = "".join(lines[found:block_end])
            if last:
                stop = _flow_end(joined, value_start)
                new = joined[:value_start] + _flow(value) + joined[stop:]
                return "".join(lines[:found]) + new + "".join(lines[block_end:])
            if inline[0] != "{" or depth != len(path) - 2:
                raise SpecError(f"cannot edit {'.'.join(path)}: {key} holds neither a block "
                                "mapping nor a flow mapping of the last key")
            edited = _edit_flow(joined, value_start, path[-1], value)
            if edited is None:
                return text
            return "".join(lines[:found]) + edited + "".join(lines[block_end:])
        if last:  # a block value: replaced by one flow line (or removed)
            if value is None:
                return "".join(lines[:found] + lines[block_end:])
            new = head[:colon] + " " + _flow(value) + head[colon:].rstrip("\n") + "\n"
            return "".join([*lines[:found], new, *lines[block_end:]])
        begin, end, indent = found + 1, block_end, child_indent
    return text
