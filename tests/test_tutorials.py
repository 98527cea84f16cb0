"""Every tutorial executes (as the docs build runs it) and keeps the promised shape.

Each ``tutorials/NN_*.py`` runs through ``docs/hooks.py`` in its own process: cell by cell, in a
scratch directory, with the Agg backend; the run must succeed and render a page. The structure
checks hold each tutorial to issue 7's shape: it opens with what the reader will learn and its
last code cell asserts something against the oracle.
"""

from __future__ import annotations

import re

import pytest

from .docs_hooks import hooks

SCRIPTS = hooks.tutorial_scripts()


def test_there_are_tutorials():
    assert [s.name[:2] for s in SCRIPTS] == [f"{i:02d}" for i in range(1, len(SCRIPTS) + 1)]
    assert len(SCRIPTS) >= 1


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_tutorial_shape(script):
    cells = hooks.split_cells(script.read_text())
    assert cells[0].kind == "markdown" and cells[0].source.startswith("# ")
    assert "What you will learn" in cells[0].source, "a tutorial opens with what the reader learns"
    code = [c for c in cells if c.kind == "code"]
    assert code and re.search(r"^\s*assert\b", code[-1].source, re.MULTILINE), (
        "a tutorial ends with an assertion against the oracle"
    )
    assert not re.search(r"\bliquidref\.\w*\._\w+|\blr\._\w+", script.read_text()), "public API only"


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_tutorial_executes(script, tmp_path):
    run = hooks.run_tutorial(script, tmp_path)
    assert run.returncode == 0, f"{script.name} failed:\n{run.stderr[-4000:]}"
    page = (tmp_path / "page.md").read_text()
    assert page.startswith("# ")
    figures = re.findall(rf"\]\({script.stem}/([^)]+\.png)\)", page)
    assert figures, f"{script.name} draws no figure (issue 7: every tutorial is illustrated)"
    for name in figures:
        assert (tmp_path / name).stat().st_size > 0
