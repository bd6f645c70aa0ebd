#!/usr/bin/env python3
"""Check that the docs' links and the code's pointers into the docs lead somewhere.

Standard library only, so it runs before `make setup`:

    python3 scripts/check_docs.py                 # the repository (`make docs-check`)
    python3 scripts/check_docs.py --root /tmp/x   # another tree

Exit 0 when everything resolves, else 1 with one line per problem, `path:line: what`. It checks:

- every relative link and image of a Markdown file (README.md, docs/, the folders' READMEs) to a
  file that does not exist, and every `#anchor` (same file or another) to a heading that does
  not exist, with GitHub's slugs (lowercase; punctuation other than `-` and `_` dropped; each
  space a `-`; `-1`, `-2` for repeats). Links into build outputs (`GENERATED`) are not checked:
  they exist only once `make build-engines` or a benchmark has run;
- every pointer into the docs that code and docs write in prose: `docs/<page>.md` alone, and
  `README, "<section>"`, `README "<section>"` or `docs/<page>.md, "<section>"` (the title may
  wrap onto a comment's next line). The page must exist and the section must be one of its
  headings, or a heading's title before its `:` or ` (` ("The packed entry point" names
  "The packed entry point: `churn_packed`"). Code files are also refused an unquoted section
  (`README, Performance`): the checker cannot tell where such a title ends. A missing
  `docs/<page>.md` right after a name rather than after punctuation or a word such as "see" or
  "in" is another project's (`onnxruntime docs/OperatorKernels.md`) and is left alone.

A line that must hold such a pointer without meaning it says `docs-check: ignore`; a file that
holds many (the checker's own tests) says `docs-check: ignore-file` once.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: Folders never read: virtualenvs, caches, and what the build and the benchmarks write.
SKIPPED_DIRS = frozenset({".venv", ".cache", ".git", "artifacts", "build", "node_modules",
                          "__pycache__"})
#: Build outputs: a link into them is left alone (`make build-engines`, `make bench` write them).
GENERATED = ("artifacts/", "build/", "bench/results/", "loadtests/results/", ".cache/")
#: Where code that may point into the docs lives, and the files there that are read.
CODE_DIRS = ("src", "tests", "bench", "scripts", "loadtests", "monitoring", "deploy", "configs")
CODE_ROOT_FILES = ("docker-compose.yml", "Makefile")
CODE_SUFFIXES = frozenset({".py", ".yaml", ".yml", ".toml", ".pbtxt", ".sh"})
CODE_NAMES = frozenset({"Makefile", "Dockerfile"})
IGNORE_MARK = "docs-check: ignore"
IGNORE_FILE_MARK = "docs-check: ignore-file"

_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"""<a\s+(?:name|id)=["']([^"']+)["']""")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//")
# A page: README (the top-level one) or docs/<page>.md, not part of a longer path.
_PAGE = r"(?<![\w/.-])(README(?:\.md)?|docs/[\w.-]+\.md)"
# A section title in double quotes, on one line or wrapped onto the next.
_TITLE = r"\"([^\"\n]{1,120}(?:\n[^\"\n]{0,120})?)\""
_PAGE_SECTION = re.compile(_PAGE + r"(?:,\s*|\s+)" + _TITLE)
_DOCS_PAGE = re.compile(r"(?<![\w/.-])(docs/[\w.-]+\.md)")
_UNQUOTED = re.compile(r"(?<![\w/.-])(README(?:\.md)?)(?:'s|,)[ \t]+(?=[A-Za-z])")
_WRAP = re.compile(r"\s*\n\s*(?:#:?|//|\*)?\s*")


@dataclass(frozen=True)
class Problem:
    """One link or pointer that leads nowhere."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def slugify(heading: str) -> str:
    """GitHub's anchor for a heading's text (before repeats get their `-n`)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _title_key(title: str) -> str:
    return " ".join(title.replace("`", "").replace("*", "").split()).casefold()


@dataclass(frozen=True)
class Page:
    """A Markdown file's headings, as written and as anchors."""

    titles: tuple[str, ...]
    anchors: frozenset[str]

    def has_section(self, title: str) -> bool:
        """Whether `title` is one of the headings, or a heading's title before `:` or ` (`."""
        wanted = _title_key(title)
        for heading in map(_title_key, self.titles):
            if heading == wanted or any(heading.startswith(wanted + cut) for cut in (":", " (")):
                return True
        return False


def _markdown_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    fence = ""
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if match:
            if not fence:
                fence = match.group(1)
            elif match.group(1) == fence:
                fence = ""
            continue
        if not fence:
            yield number, line


def read_page(path: Path) -> Page:
    """The headings of a Markdown file, with GitHub's anchors for them."""
    titles: list[str] = []
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in _markdown_lines(path.read_text(encoding="utf-8")):
        anchors.update(_HTML_ANCHOR.findall(line))
        match = _HEADING.match(line)
        if not match:
            continue
        titles.append(match.group(2))
        slug = slugify(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return Page(tuple(titles), frozenset(anchors))


class Checker:
    """Finds the dead links and pointers of one tree."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._pages: dict[Path, Page] = {}

    def page(self, path: Path) -> Page:
        path = path.resolve()
        if path not in self._pages:
            self._pages[path] = read_page(path)
        return self._pages[path]

    def _rel(self, path: Path) -> str:
        return path.resolve().relative_to(self.root).as_posix()

    def _walk(self, top: Path) -> Iterator[Path]:
        if top.is_file():
            yield top
            return
        for path in sorted(top.iterdir()):
            if path.is_dir():
                if path.name not in SKIPPED_DIRS and not path.name.startswith("."):
                    yield from self._walk(path)
            else:
                yield path

    def markdown_files(self) -> list[Path]:
        return [path for path in self._walk(self.root) if path.suffix == ".md"]

    def code_files(self) -> list[Path]:
        tops = [self.root / name for name in (*CODE_DIRS, *CODE_ROOT_FILES)]
        found = [path for top in tops if top.exists() for path in self._walk(top)
                 if path.suffix in CODE_SUFFIXES or path.name in CODE_NAMES]
        me = Path(__file__).resolve()
        return [path for path in found if path.resolve() != me]

    def check(self) -> list[Problem]:
        problems: list[Problem] = []
        for path in self.markdown_files():
            problems += self.check_links(path)
            problems += self.check_pointers(path, code=False)
        for path in self.code_files():
            problems += self.check_pointers(path, code=True)
        return sorted(set(problems), key=lambda p: (p.path, p.line, p.message))

    def check_links(self, path: Path) -> list[Problem]:
        """Relative links and anchors of one Markdown file."""
        problems = []
        for number, line in _markdown_lines(path.read_text(encoding="utf-8")):
            plain = _CODE_SPAN.sub("", line)
            targets = _LINK.findall(plain)
            ref = _REF_DEF.match(plain)
            if ref:
                targets.append(ref.group(1))
            for target in targets:
                message = self._dead_link(path, target)
                if message:
                    problems.append(Problem(self._rel(path), number, message))
        return problems

    def _dead_link(self, source: Path, target: str) -> str | None:
        if not target or _SCHEME.match(target):
            return None
        file_part, _, anchor = target.partition("#")
        if file_part.startswith("/"):
            dest = self.root / file_part.lstrip("/")
        elif file_part:
            dest = source.parent / file_part
        else:
            dest = source
        try:
            relative = dest.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return f"link to {target} leaves the repository"
        if dest.is_dir():
            relative += "/"
        if relative.startswith(GENERATED):
            return None
        if not dest.exists():
            return f"link to {target}: {relative} does not exist"
        if anchor and dest.suffix == ".md" and anchor not in self.page(dest).anchors:
            return f"link to {target}: no heading with the anchor #{anchor} in {relative}"
        return None

    def check_pointers(self, path: Path, *, code: bool) -> list[Problem]:
        """`README, "Section"`, `docs/page.md, "Section"` and `docs/page.md` in one file."""
        text = path.read_text(encoding="utf-8", errors="replace")
        if IGNORE_FILE_MARK in text:
            return []
        if path.suffix == ".md":  # fenced examples are not pointers, links are checked as links
            kept = dict(_markdown_lines(text))
            text = "\n".join(kept.get(n, "") for n in range(1, text.count("\n") + 2))
            text = re.sub(r"\]\([^)\n]*\)", lambda m: " " * len(m.group(0)), text)
        lines = text.splitlines()
        problems: list[Problem] = []
        quoted: set[int] = set()

        def report(offset: int, message: str) -> None:
            number = text.count("\n", 0, offset) + 1
            if IGNORE_MARK not in lines[number - 1]:
                problems.append(Problem(self._rel(path), number, message))

        for match in _PAGE_SECTION.finditer(text):
            quoted.add(match.start())
            name, title = match.group(1), _WRAP.sub(" ", match.group(2)).strip()
            page = self._page_file(name)
            if not page.exists():
                report(match.start(), f"{name}, \"{title}\": {self._rel_or(page)} does not exist")
            elif not self.page(page).has_section(title):
                report(match.start(), f"{name}, \"{title}\": no such heading in "
                                      f"{self._rel_or(page)}")
        for match in _DOCS_PAGE.finditer(text):
            page = self._page_file(match.group(1))
            if (match.start() not in quoted and not page.exists()
                    and not _after_other_project(text, match.start())):
                report(match.start(), f"{match.group(1)} does not exist")
        if code:
            for match in _UNQUOTED.finditer(text):
                rest = re.split(r"[\n).:;]", text[match.end():], maxsplit=1)[0][:40]
                report(match.start(), f"{match.group(0)}{rest}: a section named without quotes; "
                                      f"write README, \"<heading>\" or docs/<page>.md, "
                                      f"\"<heading>\"")
        return problems

    def _page_file(self, name: str) -> Path:
        return self.root / ("README.md" if name.startswith("README") else name)

    def _rel_or(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


#: Words after which `docs/<page>.md` is still this repository's ("see docs/platform.md").
_PROSE = frozenset({"see", "in", "and", "or", "at", "from", "to", "of", "the", "per", "by",
                    "with", "also", "on", "into", "under", "its", "our", "this"})


def _after_other_project(text: str, start: int) -> bool:
    """Whether `docs/...` follows another project's name (`onnxruntime docs/...`)."""
    before = _WRAP.sub(" ", text[max(0, start - 200):start])
    if not before.strip() or not before[-1].isspace():
        return False
    last = before.split()[-1].lstrip("([{'\"`")
    return bool(re.fullmatch(r"[\w./-]*\w", last)) and last.casefold() not in _PROSE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the tree to check (default: this repository)")
    args = parser.parse_args(argv)
    problems = Checker(args.root).check()
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
