"""A corpus of real English sentences no one here wrote: the standard library's docstrings.

Each sentence is the first non-empty line of a docstring in the source of Python's standard
library: the module's own docstring and those of its public top-level classes and functions.
The files are parsed with ``ast`` (never imported), so building the corpus runs no library code.

What is kept, so that the corpus is varied prose rather than boilerplate:

- modules whose top-level package is in ``sys.stdlib_module_names``; test packages
  (``test``, ``tests``, ``idle_test``, ``test_*.py``) and ``site-packages`` are skipped;
- lines of at least ``MIN_WORDS`` words, whitespace collapsed;
- one sentence per *shape*: lines that differ only in digits, punctuation or case (the 90-odd
  generated "Python Character Mapping Codec cp1250 ..." lines) count once, the first in file
  order wins.

The order is deterministic and independent of the file system: sentences are sorted by the
SHA-256 of their text, so ``stdlib_sentences()[:n]`` is a fixed, well-mixed sample for any n.
The corpus depends on the Python version (its standard library); the evaluation records it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import re
import sys
import sysconfig
import warnings
from pathlib import Path

MIN_WORDS = 3
_SKIPPED_DIRS = {"site-packages", "__pycache__", "test", "tests", "idle_test"}


def _first_line(docstring: str) -> str | None:
    for line in docstring.splitlines():
        if line.strip():
            return " ".join(line.split())
    return None


def _shape(sentence: str) -> str:
    """The dedupe key: lower case, digits/punctuation/underscores collapsed to one space."""
    return re.sub(r"[\d\W_]+", " ", sentence.lower()).strip()


def _source_files(root: Path) -> list[tuple[str, Path]]:
    """(dotted module name, path) of the standard library's .py files, sorted by path."""
    top_level = set(sys.stdlib_module_names)
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS)
        for filename in sorted(filenames):
            if not filename.endswith(".py") or filename.startswith("test_"):
                continue
            path = Path(dirpath) / filename
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts and parts[0] in top_level:
                files.append((".".join(parts), path))
    return files


def _docstrings(tree: ast.Module) -> list[str]:
    """The module's docstring and those of its public top-level classes and functions."""
    nodes = [tree] + [
        node
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and not node.name.startswith("_")
    ]
    return [d for d in (ast.get_docstring(node) for node in nodes) if d]


def stdlib_sentences(limit: int | None = None, stdlib_dir: str | Path | None = None) -> list[str]:
    """First docstring lines of the standard library, deduplicated, in SHA-256 order.

    Args:
        limit: return at most this many (the first ``limit`` of the fixed order); None for all.
        stdlib_dir: the library's directory (default: this interpreter's, ``sysconfig``'s
            ``stdlib`` path).

    Returns:
        list of str (about 2,700 on CPython 3.11).
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None; got {limit!r}")
    root = Path(sysconfig.get_paths()["stdlib"] if stdlib_dir is None else stdlib_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"standard library directory {root} does not exist")
    sentences = list(_collect(root.resolve()))
    return sentences if limit is None else sentences[:limit]


@functools.lru_cache(maxsize=4)
def _collect(root: Path) -> tuple[str, ...]:
    """The whole corpus of ``root`` in SHA-256 order (parsed once per process and directory)."""
    seen: set[str] = set()
    sentences = []
    for _, path in _source_files(root):
        try:
            with warnings.catch_warnings():  # invalid escape sequences in old modules
                warnings.simplefilter("ignore")
                tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):  # lib2to3's Python 2 test data, odd encodings
            continue
        for docstring in _docstrings(tree):
            line = _first_line(docstring)
            if line is None or len(line.split()) < MIN_WORDS:
                continue
            key = _shape(line)
            if key not in seen:
                seen.add(key)
                sentences.append(line)
    sentences.sort(key=lambda s: hashlib.sha256(s.encode("utf-8")).hexdigest())
    return tuple(sentences)
