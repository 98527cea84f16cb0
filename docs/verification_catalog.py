"""The generated tables of docs/verification.md, made from the test suite and the kernel sources
while the site builds, so the page cannot drift from what the tests do.

- ``mutant_tables()``: every test marked ``@pytest.mark.mutant`` (a deliberately wrong
  implementation that a check must reject), found by pytest's own collection;
- ``protocol_mutant_tables()``: the wrong protocols of the two model checkers and the violation
  each must produce;
- ``sass_contract_table()``: the opcode promises in each CUDA source's header, which
  tests/gpu/test_compile.py checks in the SASS.

``python docs/verification_catalog.py --collect OUT.json`` is the collection step on its own
(``collect_mutant_tests`` runs it in a fresh interpreter, so the site build does not import the
whole test suite).
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the tests package, for the model checkers' and SASS tables

LAYERS = ("liquidref", "emulator", "gpu")  # tests/<layer>/, in the order the page shows them


@dataclass(frozen=True)
class MutantTest:
    """One test function marked ``mutant``: where it is, its parametrized cases and what it needs."""

    path: str  # tests/<layer>/test_x.py
    function: str
    cases: tuple[str, ...]  # the parametrize ids; () for an unparametrized test
    needs: str  # "GPU", "nvcc" or "" (runs on any CPU)
    summary: str  # the first sentence of its docstring, or ""

    @property
    def layer(self) -> str:
        return Path(self.path).parts[1]


class _Collector:
    """pytest plugin: records the collected items (after ``-m mutant`` has deselected the rest)."""

    def __init__(self) -> None:
        self.items: list[dict] = []

    def pytest_collection_finish(self, session) -> None:
        for item in session.items:
            skip_reasons = " ".join(str(m.kwargs.get("reason", "")) for m in item.iter_markers("skipif"))
            needs = "GPU" if item.get_closest_marker("gpu") else "nvcc" if "nvcc" in skip_reasons else ""
            path, _, name = item.nodeid.partition("::")
            function, _, case = name.partition("[")
            doc = " ".join((inspect.getdoc(item.obj) or "").split()) if hasattr(item, "obj") else ""
            summary = doc.split(". ")[0].rstrip(".") + "." if doc else ""
            self.items.append({"path": path, "function": function, "case": case[:-1], "needs": needs,
                               "summary": summary})


def _collect_into(out: str) -> int:
    import pytest

    collector = _Collector()
    status = pytest.main(["--collect-only", "-q", "-m", "mutant", "-p", "no:cacheprovider", "tests"],
                         plugins=[collector])
    Path(out).write_text(json.dumps(collector.items))
    return int(status)


def collect_mutant_tests() -> list[MutantTest]:
    """The tests marked ``mutant``, one entry per test function, in collection order."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "mutants.json"
        run = subprocess.run([sys.executable, __file__, "--collect", str(out)], cwd=REPO,
                             capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"collecting the mutant tests failed:\n{run.stdout}\n{run.stderr}")
        items = json.loads(out.read_text())
    tests: dict[tuple[str, str], MutantTest] = {}
    for item in items:
        key = (item["path"], item["function"])
        before = tests.get(key)
        cases = (before.cases if before else ()) + ((item["case"],) if item["case"] else ())
        tests[key] = MutantTest(item["path"], item["function"], cases, item["needs"], item["summary"])
    return list(tests.values())


def _code(text: str) -> str:
    return "`" + text.replace("|", "\\|") + "`"


def mutant_tables(tests: list[MutantTest] | None = None) -> str:
    """Markdown: a count, then one table per layer (test, its mutants, what it needs)."""
    tests = collect_mutant_tests() if tests is None else tests
    cases = sum(max(1, len(t.cases)) for t in tests)
    lines = [f"{len(tests)} test functions, {cases} cases in all (`pytest -m mutant` runs exactly these).", ""]
    for layer in LAYERS:
        rows = [t for t in tests if t.layer == layer]
        if not rows:
            continue
        lines += [f"**tests/{layer}/**", "", "| test | mutants (its parametrized cases) | runs on |", "|---|---|---|"]
        for t in rows:
            mutants = ", ".join(_code(c) for c in t.cases) if t.cases else t.summary or "one, built in the test"
            runs = {"GPU": "a Hopper GPU", "nvcc": "CPU with nvcc", "": "CPU"}[t.needs]
            lines.append(f"| {_code(Path(t.path).name + '::' + t.function)} | {mutants} | {runs} |")
        lines.append("")
    return "\n".join(lines)


def protocol_mutant_tables() -> str:
    """Markdown: per model checker, its configurations and each wrong protocol with the
    violation the checker must report on it."""
    from tests.gpu import test_hopper_cluster_exchange_protocol as exchange
    from tests.gpu import test_hopper_ring_protocol as ring

    lines = [f"**The stage ring** (`tests/gpu/test_hopper_ring_protocol.py`, {len(ring.CONFIGS)} configurations)", "",
             "| wrong protocol | the checker must report |", "|---|---|"]
    lines += [f"| {_code(name)} | {_code(message)} |" for name, message in sorted(ring.MUTANTS.items())]
    lines += ["", f"**The cluster split's exchange** (`tests/gpu/test_hopper_cluster_exchange_protocol.py`, "
              f"{len(exchange.CONFIGS)} configurations: both builds)", "",
              "| wrong protocol | " + " | ".join(f"{_code(b)} build" for b in exchange.BUILDS) + " |",
              "|---|" + "---|" * len(exchange.BUILDS)]
    for name, by_build in sorted(exchange.MUTANTS.items()):
        cells = [_code(by_build[b]) if b in by_build else "(not in this build)" for b in exchange.BUILDS]
        lines.append(f"| {_code(name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def sass_contract_table() -> str:
    """Markdown: each CUDA source's targets and the opcodes its SASS must and must not contain."""
    from gpu import runtime
    from tests.gpu.test_compile import KERNEL_SOURCES, header_opcodes

    lines = ["| source | compiled for | SASS must contain | must not contain |", "|---|---|---|---|"]
    for source in KERNEL_SOURCES:
        required, forbidden = header_opcodes((runtime.KERNELS_DIR / source).read_text())
        archs = ", ".join(runtime.source_archs(source))
        lines.append(f"| {_code('gpu/kernels/' + source)} | {archs} | {' '.join(map(_code, required))} | "
                     f"{' '.join(map(_code, forbidden))} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--collect":
        print("usage: python docs/verification_catalog.py --collect OUT.json", file=sys.stderr)
        sys.exit(2)
    sys.exit(_collect_into(sys.argv[2]))
