"""Griffe extension for the API pages: two reStructuredText habits of our docstrings, in Markdown.

The package's docstrings are written to read well in ``help()`` and in the source, and use two
reST forms that Markdown does not know:

- a *literal block*: a paragraph ending in ``::`` followed by an indented block. Markdown already
  shows the indented block as code; only the ``::`` has to become ``:``;
- a *simple table*: columns under rules of ``=`` signs (``=====  =====``). Markdown would run its
  lines together into one paragraph, so the table (first rule to last rule) is fenced as text.

Everything else is left as written. Loaded by mkdocstrings (``extensions`` in ``mkdocs.yml``);
``tests/test_docs.py`` checks the conversion.
"""

from __future__ import annotations

import re

import griffe

RULE = re.compile(r"^\s*=+(\s+=+)+\s*$")


def markdown_docstring(text: str) -> str:
    """Return ``text`` with reST literal-block markers and simple tables made Markdown."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if RULE.match(line):
            # a simple table runs to the last rule before a blank line (or the end)
            end = i + 1
            last_rule = i
            while end < len(lines) and lines[end].strip():
                if RULE.match(lines[end]):
                    last_rule = end
                end += 1
            out += ["```text", *lines[i : last_rule + 1], "```"]
            out += lines[last_rule + 1 : end]
            i = end
            continue
        if line.rstrip().endswith("::") and _indented_block_follows(lines, i):
            stripped = line.rstrip()
            out.append(stripped[:-1] if stripped != "::" else "")
            i += 1
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _indented_block_follows(lines: list[str], i: int) -> bool:
    """Whether line i is followed by a blank line and then a line indented deeper than it."""
    if i + 2 >= len(lines) or lines[i + 1].strip():
        return False
    indent = len(lines[i]) - len(lines[i].lstrip())
    following = lines[i + 2]
    return bool(following.strip()) and len(following) - len(following.lstrip()) > indent


class RestToMarkdown(griffe.Extension):
    """Rewrite every docstring with ``markdown_docstring`` as Griffe loads it."""

    def on_instance(self, *, obj, **kwargs) -> None:  # noqa: D102 (the class docstring says it)
        if obj.docstring is not None:
            obj.docstring.value = markdown_docstring(obj.docstring.value)
