"""The docs build's hook and configuration: parsing of percent scripts, the generated nav, and
the offline rules (no web fonts, no privacy plugin)."""

from __future__ import annotations


import pytest

from .docs_hooks import REPO, hooks


def test_split_cells_markdown_and_code_with_line_numbers():
    text = "# %% [markdown]\n# # Title\n#\n# prose\n\n# %%\nx = 1\n\nprint(x)\n"
    cells = hooks.split_cells(text)
    assert [(c.kind, c.source, c.first_line) for c in cells] == [
        ("markdown", "# Title\n\nprose", 2),
        ("code", "x = 1\n\nprint(x)", 7),
    ]


@pytest.mark.parametrize("bad", ["# %% [raw]\nx\n", "# %% [markdown]\nnot a comment\n"])
def test_split_cells_refuses_what_it_cannot_render(bad):
    with pytest.raises(ValueError, match="line"):
        hooks.split_cells(bad)


def test_render_puts_outputs_and_figures_under_their_cell():
    results = [
        hooks.CellResult("markdown", "# T"),
        hooks.CellResult("code", "print(1)", output="1\n", figures=[["01_t-fig01.png", "a [b]"]]),
    ]
    page = hooks.render(results, "01_t.py", 0.5)
    assert "```python\nprint(1)\n```" in page and "```text\n1\n```" in page
    assert "![a (b)](01_t/01_t-fig01.png)" in page


def test_nav_lists_every_tutorial_in_order():
    config = {"nav": [{"Home": "index.md"}, {"Tutorials": []}]}
    nav = hooks.on_config(config)["nav"][1]["Tutorials"]
    assert [list(entry.values())[0] for entry in nav] == [
        f"tutorials/{s.stem}.md" for s in hooks.tutorial_scripts()
    ]
    assert all(list(entry)[0] and not list(entry)[0].startswith("#") for entry in nav)


def test_site_builds_offline():
    text = (REPO / "mkdocs.yml").read_text()
    assert "font: false" in text
    assert "privacy" not in text
    assert "strict: true" in text
