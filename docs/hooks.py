"""MkDocs hook: execute the tutorials and render them as pages, at every build.

Each tutorial is a plain Python script ``tutorials/NN_name.py`` in the "percent" format::

    # %% [markdown]
    # # 1. A title
    # Prose, one markdown line per comment line.

    # %%
    code = "runs as one cell"
    print(code)

At build time (``on_files``) every tutorial runs in its own Python process (the scripts run in
parallel, one process per script, in a scratch directory, with ``MPLBACKEND=Agg``). The process
executes the cells in order in one namespace and records, per code cell, what it printed and the
matplotlib figures that were open when the cell finished (each saved as a PNG and closed). The
hook turns that record into a page ``tutorials/NN_name.md`` and the PNGs into files of the built
site, so figures are never committed and every number on the page is the one the code printed
during this build. A cell that raises stops the build with the tutorial's traceback.

Run one tutorial through the renderer by hand (what the hook does for each)::

    python docs/hooks.py tutorials/01_liquidquant.py /tmp/out    # writes /tmp/out/page.md + PNGs

This file imports only the standard library at module level, so the same file serves as the
hook (imported by MkDocs) and as the per-tutorial executor (run as a script).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TUTORIALS = REPO / "tutorials"
TUTORIAL_GLOB = "[0-9][0-9]_*.py"
SITE_FOLDER = "tutorials"  # where the rendered pages live inside the site
CELL_MARKER = re.compile(r"^# %%(?P<rest>.*)$")
FIGURE_DPI = 110
TUTORIAL_TIMEOUT_S = 300  # one tutorial; all of them together should take well under 2 minutes


# --- parsing ------------------------------------------------------------------------------
@dataclass
class Cell:
    """One cell of a percent-format script."""

    kind: str  # "markdown" or "code"
    source: str
    first_line: int  # 1-based line of the script where the cell's source starts


def split_cells(text: str) -> list[Cell]:
    """Split a percent-format script into cells.

    ``# %%`` starts a code cell and ``# %% [markdown]`` a markdown cell whose lines are comments
    (``# text`` or a bare ``#``). Lines before the first marker form a code cell. Leading and
    trailing blank lines of each cell are dropped; empty cells are skipped.
    """
    cells: list[Cell] = []
    kind, start, lines = "code", 1, []

    def close() -> None:
        # drop blank lines at both ends, keeping the line number of the first kept line
        first = 0
        while first < len(lines) and not lines[first].strip():
            first += 1
        last = len(lines)
        while last > first and not lines[last - 1].strip():
            last -= 1
        body = lines[first:last]
        if not body:
            return
        if kind == "markdown":
            body = [_uncomment(line, start + first + i) for i, line in enumerate(body)]
        cells.append(Cell(kind, "\n".join(body), start + first))

    for number, line in enumerate(text.splitlines(), start=1):
        marker = CELL_MARKER.match(line)
        if marker:
            close()
            rest = marker.group("rest").strip()
            if rest not in ("", "[markdown]"):
                raise ValueError(f"line {number}: unknown cell marker {line!r}")
            kind, start, lines = ("markdown" if rest else "code"), number + 1, []
        else:
            lines.append(line)
    close()
    return cells


def _uncomment(line: str, number: int) -> str:
    if line == "#":
        return ""
    if line.startswith("# "):
        return line[2:]
    raise ValueError(
        f"line {number}: a markdown cell line must be '#' or start with '# '; got {line!r}"
    )


# --- execution (in the child process) -----------------------------------------------------
@dataclass
class CellResult:
    """A cell plus what it produced when executed."""

    kind: str
    source: str
    output: str = ""
    figures: list[list[str]] = field(default_factory=list)  # [file name, alt text] pairs


def execute(script: Path, out_dir: Path) -> list[CellResult]:
    """Run ``script`` cell by cell; save figures into ``out_dir``; return the cells' results.

    Raises whatever a cell raises (line numbers in the traceback are the script's).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.show = lambda *args, **kwargs: None  # figures are collected after each cell instead

    source = script.read_text()
    namespace = {"__name__": "__main__", "__file__": str(script)}
    results: list[CellResult] = []
    figure_count = 0
    for cell in split_cells(source):
        if cell.kind == "markdown":
            results.append(CellResult("markdown", cell.source))
            continue
        # pad with blank lines so tracebacks point at the script's own line numbers
        code = compile("\n" * (cell.first_line - 1) + cell.source, str(script), "exec")
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            exec(code, namespace)
        result = CellResult("code", cell.source, output=buffer.getvalue())
        for number in plt.get_fignums():
            figure = plt.figure(number)
            figure_count += 1
            name = f"{script.stem}-fig{figure_count:02d}.png"
            figure.savefig(out_dir / name, dpi=FIGURE_DPI, bbox_inches="tight")
            result.figures.append([name, _figure_title(figure) or f"figure {figure_count}"])
            plt.close(figure)
        results.append(result)
    return results


def _figure_title(figure) -> str:
    """The figure's suptitle, else its axes' titles joined: the image's alt text."""
    suptitle = figure.get_suptitle()
    if suptitle:
        return suptitle
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    return "; ".join(titles)


def render(results: list[CellResult], script_name: str, seconds: float) -> str:
    """The markdown page of one executed tutorial.

    The page is ``tutorials/NN_name.md``; its figures and a copy of the script live in the
    folder ``tutorials/NN_name/`` beside it, so links are ``NN_name/<file>``.
    """
    folder = script_name.removesuffix(".py")
    parts: list[str] = []
    for index, cell in enumerate(results):
        if cell.kind == "markdown":
            parts.append(cell.source)
            if index == 0:  # right under the title block: where the page comes from
                parts.append(
                    f'!!! info "Executed while this site was built"\n'
                    f"    This page is the script [`tutorials/{script_name}`]({folder}/{script_name}), run "
                    f"cell by cell during the build ({seconds:.1f} s); every output and figure "
                    f"below is what it produced then. Run it yourself with "
                    f"`python tutorials/{script_name}`."
                )
            continue
        parts.append(f"```python\n{cell.source}\n```")
        if cell.output.strip():
            parts.append(f"```text\n{cell.output.rstrip()}\n```")
        for name, alt in cell.figures:
            alt = alt.replace("[", "(").replace("]", ")").replace("\n", " ")
            parts.append(f"![{alt}]({folder}/{name})")
    return "\n\n".join(parts) + "\n"


def main(argv: list[str]) -> int:
    """``python docs/hooks.py SCRIPT OUT_DIR``: execute and render one tutorial into OUT_DIR."""
    if len(argv) != 2:
        print("usage: python docs/hooks.py TUTORIAL.py OUT_DIR", file=sys.stderr)
        return 2
    script, out_dir = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(script.parent))
    start = time.perf_counter()
    results = execute(script, out_dir)
    seconds = time.perf_counter() - start
    (out_dir / "page.md").write_text(render(results, script.name, seconds))
    (out_dir / "cells.json").write_text(json.dumps([vars(r) for r in results], indent=1))
    return 0


# --- the MkDocs side ----------------------------------------------------------------------
def tutorial_scripts() -> list[Path]:
    """The tutorials, in order: ``tutorials/NN_*.py``."""
    return sorted(TUTORIALS.glob(TUTORIAL_GLOB))


def run_tutorial(
    script: Path, out_dir: Path, timeout_s: float = TUTORIAL_TIMEOUT_S
) -> subprocess.CompletedProcess:
    """Execute one tutorial in a fresh Python process (cwd = a scratch directory).

    A run longer than ``timeout_s`` is stopped and reported as failed (return code -9), so a
    tutorial that hangs fails the build instead of stalling it.
    """
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [sys.executable, str(Path(__file__).resolve()), str(script), str(out_dir)]
    with tempfile.TemporaryDirectory(prefix="liquidref-tutorial-") as scratch:
        try:
            return subprocess.run(
                command, cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout_s
            )
        except subprocess.TimeoutExpired as expired:
            stderr = expired.stderr.decode() if isinstance(expired.stderr, bytes) else ""
            return subprocess.CompletedProcess(
                command, -9, "", f"{stderr}\n{script.name} ran longer than {timeout_s} s; stopped"
            )


def on_config(config):
    """Fill the nav's empty "Tutorials" section with every tutorial script, in order."""
    for entry in config["nav"] or []:
        if isinstance(entry, dict) and entry.get("Tutorials") == []:
            entry["Tutorials"] = [
                {_title(script): f"{SITE_FOLDER}/{script.stem}.md"} for script in tutorial_scripts()
            ]
    return config


def _title(script: Path) -> str:
    """A tutorial's title: the first markdown heading of its first cell."""
    for cell in split_cells(script.read_text()):
        if cell.kind == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return script.stem


def on_files(files, config):
    """Execute every tutorial and add its page, figures and script to the site's files."""
    from mkdocs.exceptions import PluginError
    from mkdocs.structure.files import File

    scripts = tutorial_scripts()
    with tempfile.TemporaryDirectory(prefix="liquidref-pages-") as work:
        outs = [Path(work) / script.stem for script in scripts]
        with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
            runs = list(pool.map(run_tutorial, scripts, outs))
        for script, out, run in zip(scripts, outs, runs):
            if run.returncode != 0:
                raise PluginError(
                    f"tutorial {script.name} failed while building the docs:\n{run.stderr}"
                )
            folder = f"{SITE_FOLDER}/{script.stem}"
            files.append(
                File.generated(config, f"{folder}.md", content=(out / "page.md").read_text())
            )
            files.append(File.generated(config, f"{folder}/{script.name}", content=script.read_bytes()))
            for png in sorted(out.glob("*.png")):
                files.append(File.generated(config, f"{folder}/{png.name}", content=png.read_bytes()))
    return files


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
