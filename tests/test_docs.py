"""The docs build: parsing of percent scripts, the generated nav, the offline rules (no web fonts,
no privacy plugin), API pages that document every name the tutorials use, the docstring
conversion of docs/griffe_rst.py, and the verification page's catalogue of mutant tests
(docs/verification_catalog.py)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import types

import pytest

from .docs_hooks import REPO, hooks, verification_catalog


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


# --- the API pages document what the tutorials use ---------------------------------------
# Issue 7: the tutorials use the same public API the API pages document. Every name a tutorial
# reaches in liquidref, emulator or gpu (through an import or an attribute of an imported
# module) must be documented on an API page: the same object as a `::: identifier` there, or,
# for an UPPER_CASE constant, in a module whose docstring is rendered there (`::: module`).

PACKAGES = ("liquidref", "emulator", "gpu")


def names_used(source: str) -> set[str]:
    """Fully qualified names of liquidref/emulator/gpu objects that a script uses."""
    tree = ast.parse(source)
    alias: dict[str, str] = {}
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for item in node.names:
                if item.name.split(".")[0] in PACKAGES:
                    alias[item.asname or item.name.split(".")[0]] = (
                        item.name if item.asname else item.name.split(".")[0]
                    )
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PACKAGES:
            for item in node.names:
                alias[item.asname or item.name] = f"{node.module}.{item.name}"
                used.add(f"{node.module}.{item.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain, root = [], node
            while isinstance(root, ast.Attribute):
                chain.append(root.attr)
                root = root.value
            if isinstance(root, ast.Name) and root.id in alias:
                used.add(".".join([alias[root.id], *reversed(chain)]))
    return used


def resolve(name: str):
    """Import the longest module prefix of ``name`` and walk the rest as attributes."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise ModuleNotFoundError(name)


def documented_identifiers() -> set[str]:
    """Every ``::: identifier`` of the API pages, plus ``identifier.NAME`` for each NAME of its
    explicit ``members:`` list."""
    found: set[str] = set()
    for page in sorted((REPO / "docs" / "api").glob("*.md")):
        current = None
        for line in page.read_text().splitlines():
            block = re.match(r"^::: ([\w.]+)", line)
            if block:
                current = block.group(1)
                found.add(current)
            elif current and (member := re.match(r"^\s+- (\w+)\s*$", line)):
                found.add(f"{current}.{member.group(1)}")
            elif line and not line[0].isspace():
                current = None
    return found


def test_names_used():
    source = "import liquidref as lr\nfrom emulator import isa\nlr.gemm(isa.F_DST, x.y)\n"
    assert names_used(source) == {"liquidref.gemm", "emulator.isa", "emulator.isa.F_DST"}


@pytest.mark.parametrize("script", hooks.tutorial_scripts(), ids=lambda s: s.stem)
def test_api_pages_document_what_the_tutorial_uses(script):
    documented = documented_identifiers()
    documented_objects = [resolve(name) for name in documented]
    missing = []
    for name in sorted(names_used(script.read_text())):
        obj = resolve(name)
        module, _, attribute = name.rpartition(".")
        if isinstance(obj, types.ModuleType) or name in documented:
            continue
        if attribute.isupper() and module in documented:
            continue
        if not any(obj is other for other in documented_objects):
            missing.append(name)
    assert not missing, f"{script.name} uses names no API page documents: {missing}"


# --- docs/griffe_rst.py: reST habits of the docstrings, rendered as Markdown ---------------
def _griffe_rst():
    pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location("liquidref_griffe_rst", REPO / "docs" / "griffe_rst.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_simple_table_is_fenced_whole():
    text = "Intro:\n\n====  ====\nname  value\n====  ====\nA     1\n  B   2\n====  ====\n\nAfter."
    out = _griffe_rst().markdown_docstring(text).splitlines()
    assert out[:2] == ["Intro:", ""]
    assert out[2] == "```text" and out[9] == "```"
    assert out[3:9] == text.splitlines()[2:8]
    assert out[-1] == "After."


def test_literal_block_marker_becomes_a_colon_only_before_an_indented_block():
    text = "Layout::\n\n    a b c\n\nRatio 2::1 stays.\nTail::\nnot indented"
    out = _griffe_rst().markdown_docstring(text)
    assert out.splitlines()[0] == "Layout:" and "    a b c" in out
    assert "Ratio 2::1 stays." in out and "Tail::" in out



# --- the executor of docs/hooks.py on small made-up scripts --------------------------------
def test_executor_records_output_and_figures_per_cell(tmp_path):
    script = tmp_path / "01_made_up.py"
    script.write_text(
        "# %% [markdown]\n# # 1. Made up\n\n# %%\nimport matplotlib.pyplot as plt\n"
        "print('hello')\nfig, ax = plt.subplots()\nax.set_title('a line')\nax.plot([0, 1])\n"
        "plt.show()\n\n# %%\nassert 1 + 1 == 2\n"
    )
    out = tmp_path / "out"
    run = hooks.run_tutorial(script, out)
    assert run.returncode == 0, run.stderr
    page = (out / "page.md").read_text()
    assert page.startswith("# 1. Made up") and "```text\nhello\n```" in page
    assert "![a line](01_made_up/01_made_up-fig01.png)" in page
    assert (out / "01_made_up-fig01.png").read_bytes()[:4] == b"\x89PNG"


def test_executor_fails_with_the_scripts_own_line_number(tmp_path):
    script = tmp_path / "01_broken.py"
    script.write_text("# %% [markdown]\n# # 1. Broken\n\n# %%\nx = 1\n\n# %%\nassert x == 2, 'oops'\n")
    run = hooks.run_tutorial(script, tmp_path / "out")
    assert run.returncode != 0
    assert f'File "{script}", line 8' in run.stderr and "oops" in run.stderr


def test_executor_stops_a_tutorial_that_hangs(tmp_path):
    script = tmp_path / "01_hangs.py"
    script.write_text("# %%\nimport time\ntime.sleep(60)\n")
    run = hooks.run_tutorial(script, tmp_path / "out", timeout_s=1)
    assert run.returncode != 0 and "ran longer than 1 s" in run.stderr


# --- docs/verification.md: the mutant catalogue and what the page names --------------------
@pytest.fixture(scope="module")
def mutant_tests():
    return verification_catalog.collect_mutant_tests()  # pytest's own collection, -m mutant


def test_catalogue_covers_every_collection_of_wrong_implementations(mutant_tests):
    """Each test module's MUTANTS dict (name -> wrong implementation) is covered: every name but
    the control "correct" is a case of a test marked mutant in that module."""
    modules = sorted((REPO / "tests").rglob("test_*.py"))
    checked = 0
    for path in modules:
        module = importlib.import_module(".".join(path.relative_to(REPO).with_suffix("").parts))
        mutants = getattr(module, "MUTANTS", None)
        if not isinstance(mutants, dict):
            continue
        relative = path.relative_to(REPO).as_posix()
        cases = {case for t in mutant_tests if t.path == relative for case in t.cases}
        missing = [name for name in mutants if name != "correct" and not any(name in case for case in cases)]
        assert not missing, f"{relative}: no test marked mutant runs {missing}"
        checked += 1
    assert checked >= 6


def test_catalogue_shows_every_layer_and_where_each_test_runs(mutant_tests):
    tables = verification_catalog.mutant_tables(mutant_tests)
    for layer in verification_catalog.LAYERS:
        assert f"**tests/{layer}/**" in tables
    assert "test_property_catches_kernel_mutant` | `dequant_without_xor`" in tables
    by_name = {t.function: t for t in mutant_tests}
    assert by_name["test_property_catches_kernel_mutant"].needs == "GPU"
    assert by_name["test_checkers_catch_violations"].needs == "nvcc"
    assert by_name["test_property_rejects_mutant"].needs == ""


def test_protocol_and_sass_tables_come_from_the_sources():
    protocols = verification_catalog.protocol_mutant_tables()
    assert "| `release_current_stage` | `land in slot` |" in protocols
    assert "| `owner_never_arrives` | `deadlock` | (not in this build) |" in protocols
    sass = verification_catalog.sass_contract_table()
    assert "| `gpu/kernels/w4a8_hopper.cu` | sm_90a | `IGMMA` `UTMALDG` `SYNCS` | `LDL` `STL` |" in sass


def test_every_test_the_verification_page_names_exists():
    page = (REPO / "docs" / "verification.md").read_text()
    named = set(re.findall(r"`(test_[a-z0-9_]+)`", page))
    sources = "\n".join(p.read_text() for p in (REPO / "tests").rglob("test_*.py"))
    missing = sorted(name for name in named if f"def {name}(" not in sources)
    assert named and not missing, missing


def test_an_unmarked_test_named_after_one_is_refused():
    from . import conftest

    class Item:
        def __init__(self, name, marked):
            self.name, self.nodeid, self.marked = name, f"tests/test_x.py::{name}", marked

        def get_closest_marker(self, name):
            return object() if self.marked and name == "mutant" else None

    conftest.pytest_collection_modifyitems(None, [Item("test_catches_mutant[a]", True), Item("test_other", False)])
    with pytest.raises(pytest.UsageError, match=r"test_x.py::test_rejects_the_Mutants"):
        conftest.pytest_collection_modifyitems(None, [Item("test_rejects_the_Mutants", False)])
