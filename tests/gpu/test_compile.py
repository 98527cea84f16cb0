"""Every CUDA source compiles on a CPU-only machine, and its SASS says what its header promises.

Each ``gpu/kernels/*.cu`` starts with a comment block holding::

    // nvcc-arch: sm_80 sm_90a                 targets it must compile for
    // SASS must contain: IMMA LDG.E.128 ...   opcodes (a prefix up to a '.') that must appear
    // SASS must not contain: LDL STL ...      opcodes that must not

This module compiles each source for each target with
``nvcc -DLIQUIDREF_SASS_CHECK -std=c++17 -gencode=arch=compute_X,code=sm_X -cubin -Xptxas -v``
(the define turns on explicit instantiations of representative template configurations),
disassembles with ``cuobjdump -sass``, and checks the opcode lists, that ptxas reports no stack
frame and no spills, and (for the mma.sync kernel) the dequant's integer instructions per 8
weights. It also compiles every source through NVRTC (``gpu.runtime.compile_cubin``, the path
the GPU runs) when libnvrtc is installed. Skipped only where nvcc is absent.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpu import api, hopper, runtime
from liquidref.tiling import STATIC_SHARED_RESERVE

KERNEL_SOURCES = sorted(p.name for p in runtime.KERNELS_DIR.glob("*.cu"))
_CONTAIN_RE = re.compile(r"^//\s*SASS must contain:(.*)$", re.MULTILINE)
_NOT_CONTAIN_RE = re.compile(r"^//\s*SASS must not contain:(.*)$", re.MULTILINE)
_SASS_LINE_RE = re.compile(r"^\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[0-9T]\s+)?([A-Z][A-Z0-9_.]*)")
_FUNCTION_RE = re.compile(r"^\s*Function\s*:\s*(\S+)")
_PTXAS_FRAME_RE = re.compile(
    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads"
)
_PTXAS_ENTRY_RE = re.compile(r"Compiling entry function '(\S+)' for '(\S+)'")
_PTXAS_REGS_RE = re.compile(r"Used (\d+) registers")
_PTXAS_SMEM_RE = re.compile(r"(\d+) bytes smem")

# integer ALU opcodes counted as dequant work (moves such as IMAD.MOV are not)
INTEGER_OPCODES = ("LOP3", "IMAD", "SHF", "PRMT", "IADD3", "IADD", "VIADD", "LEA", "BMSK", "SGXT", "SHL", "SHR", "BFE", "BFI")
DEQUANT_PROBE = "dequant_probe_kernel"
DEQUANT_PROBE_WEIGHTS = 32  # one thread's codes of one packed block
DEQUANT_BUDGET_PER_8 = 8  # the paper's 7 per 8 weights + the metadata split (4 PRMT per 32)


def _find_nvcc() -> str | None:
    return shutil.which("nvcc") or next(
        (p for p in ("/usr/local/cuda/bin/nvcc",) if os.access(p, os.X_OK)), None
    )


def _find_cuobjdump() -> str | None:
    for root in sys.path:
        for path in sorted(glob.glob(os.path.join(root, "nvidia", "cu*", "bin", "cuobjdump"))):
            if os.access(path, os.X_OK):
                return path
    return shutil.which("cuobjdump") or next(
        (p for p in ("/usr/local/cuda/bin/cuobjdump",) if os.access(p, os.X_OK)), None
    )


NVCC = _find_nvcc()
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed (CUDA toolkit)")


# --- parsing (pure functions, tested below on synthetic text) ------------------------------


def header_opcodes(text: str) -> tuple[list[str], list[str]]:
    """(required, forbidden) opcode lists from a source's header comment."""
    required = _CONTAIN_RE.search(text)
    forbidden = _NOT_CONTAIN_RE.search(text)
    if required is None or forbidden is None:
        raise ValueError("the source needs '// SASS must contain: ...' and '// SASS must not contain: ...' lines")
    return required.group(1).split(), forbidden.group(1).split()


def sass_functions(sass: str) -> dict[str, list[str]]:
    """{function name: [mnemonic of each instruction]} from ``cuobjdump -sass`` text."""
    functions: dict[str, list[str]] = {}
    current = None
    for line in sass.splitlines():
        match = _FUNCTION_RE.match(line)
        if match:
            current = functions.setdefault(match.group(1), [])
            continue
        match = _SASS_LINE_RE.match(line)
        if match and current is not None:
            current.append(match.group(1))
    return functions


def opcode_matches(mnemonic: str, opcode: str) -> bool:
    """``IMMA`` matches ``IMMA.16832.S8.S8``; ``LDG.E.128`` matches ``LDG.E.128.CONSTANT``."""
    return mnemonic == opcode or mnemonic.startswith(opcode + ".")


def opcode_problems(mnemonics: list[str], required: list[str], forbidden: list[str]) -> list[str]:
    """What violates the header's promise (empty when all is well)."""
    problems = [f"missing {op}" for op in required if not any(opcode_matches(m, op) for m in mnemonics)]
    problems += [
        f"forbidden {op} present ({sum(opcode_matches(m, op) for m in mnemonics)}x)"
        for op in forbidden
        if any(opcode_matches(m, op) for m in mnemonics)
    ]
    return problems


def ptxas_report(log: str) -> dict[str, dict[str, int]]:
    """{entry function: {registers, stack, spill_stores, spill_loads, static_shared}} from
    ``-Xptxas -v`` output."""
    report: dict[str, dict[str, int]] = {}
    current = None
    for line in log.splitlines():
        entry = _PTXAS_ENTRY_RE.search(line)
        if entry:
            current = report.setdefault(entry.group(1), {})
            continue
        frame = _PTXAS_FRAME_RE.search(line)
        if frame and current is not None:
            current["stack"], current["spill_stores"], current["spill_loads"] = map(int, frame.groups())
        regs = _PTXAS_REGS_RE.search(line)
        if regs and current is not None:
            current["registers"] = int(regs.group(1))
        smem = _PTXAS_SMEM_RE.search(line)
        if smem and current is not None:
            current["static_shared"] = int(smem.group(1))
    return report


def integer_instruction_count(mnemonics: list[str], uniform: bool = False) -> int:
    """Integer ALU instructions (not moves) in a list of mnemonics.

    With ``uniform``, the uniform-datapath forms (``ULOP3``, ``USHF``, ``UIMAD``, ...) count too:
    ptxas moves work on values that are the same for every lane (kernel arguments) there.
    """

    def base(m: str) -> str:
        op = m.split(".")[0]
        return op[1:] if uniform and op.startswith("U") and op[1:] in INTEGER_OPCODES else op

    return sum(
        1
        for m in mnemonics
        if base(m) in INTEGER_OPCODES and not m.removeprefix("U").startswith("IMAD.MOV")
    )


# --- compiling -----------------------------------------------------------------------------


# Builds of the Hopper kernel gpu/hopper.py launches: the default one, the one with two load
# warps at every n (for tiles with a long unsplit k range) and racecheck's build of the cluster
# split (plain remote stores ordered by the cluster barrier). Each passes every check below.
HOPPER_BUILDS = ((), (hopper.TWO_LOADERS_DEFINE,), (hopper.BARRIER_EXCHANGE_DEFINE,))


def _cases():
    """(source, arch, extra -D defines) of every build the checks compile."""
    cases = []
    for source in KERNEL_SOURCES:
        try:
            archs = runtime.source_archs(source)
        except ValueError:
            archs = ("sm_90a",)  # test_header_lines reports the missing line
        builds = HOPPER_BUILDS if source == hopper.SOURCE else ((),)
        cases += [(source, arch, defines) for arch in archs for defines in builds]
    return cases


def _case_id(case) -> str:
    source, arch, defines = case
    return "-".join((source, arch, *defines))


@functools.lru_cache(maxsize=None)
def compile_sass(source: str, arch: str, tmp_root: str, defines: tuple[str, ...] = ()) -> tuple[str, str]:
    """(ptxas -v log, cuobjdump -sass text) of one source for one target, with extra -D
    ``defines`` (a build option gpu/ sets for some launches)."""
    number = arch.removeprefix("sm_")
    cubin = Path(tmp_root) / f"{Path(source).stem}.{arch}{''.join('.' + d for d in defines)}.cubin"
    command = [
        NVCC, "-DLIQUIDREF_SASS_CHECK", *(f"-D{d}" for d in defines), "-std=c++17",
        f"-gencode=arch=compute_{number},code=sm_{number}",
        "-cubin", "-Xptxas", "-v", f"-I{runtime.KERNELS_DIR}",
        "-o", str(cubin), str(runtime.KERNELS_DIR / source),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"nvcc failed for {source} ({arch}):\n{' '.join(command)}\n{result.stderr}")
    cuobjdump = _find_cuobjdump()
    if cuobjdump is None:
        pytest.fail("cuobjdump not found: pip install 'liquidref[cuda-tools]' (nvidia-cuda-cuobjdump)")
    sass = subprocess.run([cuobjdump, "-sass", str(cubin)], capture_output=True, text=True, timeout=120)
    if sass.returncode != 0:
        pytest.fail(f"cuobjdump failed on {cubin}:\n{sass.stderr}")
    return result.stderr + result.stdout, sass.stdout


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cubins"))


# --- the checks ----------------------------------------------------------------------------


@pytest.mark.parametrize("source", KERNEL_SOURCES)
def test_header_lines(source):
    text = (runtime.KERNELS_DIR / source).read_text()
    required, forbidden = header_opcodes(text)
    assert runtime.source_archs(source), f"{source}: empty nvcc-arch line"
    assert required, f"{source}: name at least one opcode the SASS must contain"
    assert {"LDL", "STL"} <= set(forbidden), f"{source}: forbid local memory (LDL STL)"


@pytest.mark.parametrize(("source", "arch", "defines"), _cases(), ids=map(_case_id, _cases()))
def test_sass_matches_header(source, arch, defines, build_dir):
    log, sass = compile_sass(source, arch, build_dir, defines)
    functions = sass_functions(sass)
    assert functions, f"{source} ({arch}): no kernels in the cubin; are the LIQUIDREF_SASS_CHECK instantiations there?"
    required, forbidden = header_opcodes((runtime.KERNELS_DIR / source).read_text())
    mnemonics = [m for ms in functions.values() for m in ms]
    problems = opcode_problems(mnemonics, required, forbidden)
    assert not problems, f"{source} ({arch}): {problems}"


@pytest.mark.parametrize(("source", "arch", "defines"), _cases(), ids=map(_case_id, _cases()))
def test_no_local_memory_or_spills(source, arch, defines, build_dir):
    log, _ = compile_sass(source, arch, build_dir, defines)
    report = ptxas_report(log)
    assert report, f"{source} ({arch}): ptxas -v reported no entry functions:\n{log}"
    for function, info in report.items():
        assert (info.get("stack"), info.get("spill_stores"), info.get("spill_loads")) == (0, 0, 0), (
            f"{source} ({arch}) {function}: {info}"
        )
        print(f"{source} {arch} {function}: {info.get('registers')} registers")


@pytest.mark.parametrize("arch", runtime.source_archs(api.QUANTIZE_SOURCE))
def test_quantizer_registers_never_limit_its_ctas_per_sm(arch, build_dir):
    """gpu.api.quantize_slices counts the quantizer's CTAs per SM by threads alone (2048 per SM):
    true while a thread needs at most 65536 / 2048 = 32 registers."""
    report = ptxas_report(compile_sass(api.QUANTIZE_SOURCE, arch, build_dir)[0])
    assert report
    for function, info in report.items():
        assert info["registers"] <= 65536 // api.SM_MAX_THREADS, (function, info)


@pytest.mark.parametrize("defines", HOPPER_BUILDS, ids=lambda d: "-".join(d) or "default")
def test_hopper_static_shared_memory_fits_its_reserve(defines, build_dir):
    """The tile configurations budget SHARED_MEMORY_LIMIT of dynamic shared memory and leave
    STATIC_SHARED_RESERVE for the kernels' static variables (liquidref.tiling): no build may use
    more, or a configuration at the limit would fail to launch."""
    report = ptxas_report(compile_sass(hopper.SOURCE, "sm_90a", build_dir, defines)[0])
    kernels = {function: info for function, info in report.items() if "w4a8_hopper" in function}
    assert kernels
    for function, info in kernels.items():
        assert 0 < info["static_shared"] <= STATIC_SHARED_RESERVE, (function, info)


@pytest.mark.parametrize("defines", HOPPER_BUILDS, ids=lambda d: "-".join(d) or "default")
def test_hopper_wgmmas_are_never_serialized(defines, build_dir):
    """ptxas serializes wgmma.mma_async (each waits for the one before: no overlap of dequant and
    tensor core) when it runs out of registers or must fence accumulators in a divergent path,
    and says so only as an info line ("Potential Performance Loss", C7510..C7520). A kernel
    restructure (stream-K) once cost 25-35% this way on an H200; no instantiation may have it."""
    log, _ = compile_sass(hopper.SOURCE, "sm_90a", build_dir, defines)
    assert "w4a8_hopper" in log
    losses = [line for line in log.splitlines() if "Potential Performance Loss" in line]
    assert not losses, "\n".join(losses)


@pytest.mark.parametrize("defines", [(), (hopper.BARRIER_EXCHANGE_DEFINE,)], ids=["st_async", "barrier_exchange"])
def test_cluster_exchange_instructions(defines, build_dir):
    """Every cluster-split kernel (template argument CLUSTER_SPLIT = true, mangled ``Lb1E``)
    sends its partials with st.async (STAS) in the default build, whose one cluster barrier
    arrive (UCGABAR_ARV) is the barriers' init; racecheck's build has plain stores, no STAS, no
    remote mbarrier complete_tx (SYNCS.ARRIVE.TRANS64.RED), and a second arrive: the exchange's
    phase of the cluster barrier. The kernels without clusters have neither."""
    functions = sass_functions(compile_sass(hopper.SOURCE, "sm_90a", build_dir, defines)[1])
    cluster = {name: ms for name, ms in functions.items() if "w4a8_hopper" in name and "Lb1E" in name}
    others = {name: ms for name, ms in functions.items() if "w4a8_hopper" in name and "Lb1E" not in name}
    assert cluster and others
    by_barrier = bool(defines)
    for name, mnemonics in cluster.items():
        arrives = sum(m.startswith("UCGABAR_ARV") for m in mnemonics)
        assert any(opcode_matches(m, "STAS") for m in mnemonics) is not by_barrier, name
        assert not any(m.startswith("SYNCS.ARRIVE.TRANS64.RED") for m in mnemonics), name
        assert arrives >= 2 if by_barrier else arrives == 1, (name, arrives)
    for name, mnemonics in others.items():
        assert not any(opcode_matches(m, "STAS") or m.startswith(("SYNCS.ARRIVE.TRANS64.RED", "UCGABAR"))
                       for m in mnemonics), name


@pytest.mark.mutant
def test_racecheck_mutant_reads_its_buffer_early(build_dir, tmp_path, monkeypatch):
    """test_hopper_mutants.RACECHECK_MUTANT (the racecheck build with an owner's read before its
    phase-1 wait) compiles, and its extra read survives: each cluster-split kernel of the mutated
    racecheck build has one more shared-memory load (LDS) than the real one."""
    from .test_hopper_mutants import RACECHECK_MUTANT, use_mutated_kernels

    defines = (hopper.BARRIER_EXCHANGE_DEFINE,)
    real = sass_functions(compile_sass(hopper.SOURCE, "sm_90a", build_dir, defines)[1])
    use_mutated_kernels(tmp_path, monkeypatch, RACECHECK_MUTANT)
    mutated = sass_functions(compile_sass(hopper.SOURCE, "sm_90a", str(tmp_path), defines)[1])
    cluster = [name for name in real if "w4a8_hopper" in name and "Lb1E" in name]
    assert cluster
    for name in cluster:
        loads = [sum(opcode_matches(m, "LDS") for m in build[name]) for build in (real, mutated)]
        assert loads[1] == loads[0] + 1, (name, loads)


def test_racecheck_probe_compiles(tmp_path):
    """scripts/racecheck_probe.py's kernels (every mode of the ring, the cluster exchanges)
    compile for sm_90a, so a device session does not find a typo in them."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "racecheck_probe.py"
    spec = importlib.util.spec_from_file_location("racecheck_probe", path)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    for name, (source, defines) in {"ring": (probe.SOURCE, ()), "cluster": (probe.CLUSTER_SOURCE, ()),
                                    **{f"ring_{m}": (probe.SOURCE, d) for m, d in probe.MODES.items()}}.items():
        cu = tmp_path / f"probe_{name}.cu"
        cu.write_text(source)
        command = [NVCC, *defines, "-std=c++17", "-gencode=arch=compute_90a,code=sm_90a", "-cubin",
                   "-o", str(cu.with_suffix(".cubin")), str(cu)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{name}: {result.stderr}"


def test_hopper_checks_cover_the_chosen_configurations():
    """The SASS-check instantiations of w4a8_hopper.cu include every build choose_tile_config
    launches for K % 256 == 0, cluster splits included (the checks above then cover them)."""
    from liquidref.tiling import choose_tile_config

    text = (runtime.KERNELS_DIR / "w4a8_hopper.cu").read_text()
    checked = set(re.findall(r"(w4a8_hopper(?:_excp)?<[0-9a-z, ]+>)\(", text))
    for m in (1, 9, 16, 17, 32, 33, 64, 65, 128, 129, 256, 257, 512, 513, 2047, 2048, 2100, 3000, 4096, 8192):
        for n, k in ((4096, 4096), (6144, 4096), (4096, 14336), (8192, 8192), (10240, 8192), (57344, 8192),
                     (8192, 28672), (20480, 4096)):
            config = choose_tile_config(m, n, k)
            name = hopper.kernel_name(config, cluster_split=config.cluster_split)
            assert name.removeprefix("liquidref::hopper::") in checked, f"M={m} N={n} K={k}: {name}"


@pytest.mark.parametrize("arch", runtime.source_archs("w4a8_mma_sync.cu"))
def test_mma_sync_dequant_instruction_count(arch, build_dir, record_property):
    """The in-register dequant costs at most 8 integer instructions per 8 weights (paper: 7,
    plus one for splitting the metadata word once per block)."""
    _, sass = compile_sass("w4a8_mma_sync.cu", arch, build_dir)
    functions = sass_functions(sass)
    probe = [name for name in functions if DEQUANT_PROBE in name]
    assert len(probe) == 1, f"expected one {DEQUANT_PROBE} in {list(functions)}"
    mnemonics = functions[probe[0]]
    count = integer_instruction_count(mnemonics)
    per_8 = 8 * count / DEQUANT_PROBE_WEIGHTS
    record_property("dequant_integer_instructions_per_8_weights", per_8)
    print(f"{arch}: dequant {count} integer instructions per {DEQUANT_PROBE_WEIGHTS} weights = {per_8} per 8")
    assert 0 < per_8 <= DEQUANT_BUDGET_PER_8, f"{arch}: {per_8} per 8 weights; SASS {mnemonics}"
    imma = sum(opcode_matches(m, "IMMA") for name, ms in functions.items() if "mma_sync" in name for m in ms)
    assert imma > 0


@pytest.mark.skipif(not runtime.nvrtc_available(), reason="libnvrtc is not installed (pip install nvidia-cuda-nvrtc)")
@pytest.mark.parametrize(("source", "arch", "defines"), _cases(), ids=map(_case_id, _cases()))
def test_nvrtc_compiles(source, arch, defines):
    """The GPU path (NVRTC through gpu.runtime) accepts each build of each source for each of
    its targets."""
    options = ("-DLIQUIDREF_SASS_CHECK", *(f"-D{d}" for d in defines))
    cubin, _ = runtime.compile_cubin(source, options=options, arch=arch)
    assert cubin.startswith(b"\x7fELF")


# --- the checkers themselves can fail -------------------------------------------------------

_SYNTHETIC_SASS = """
        Function : _Z6kernelPi
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/              @!P0 LDG.E.128.CONSTANT R4, desc[UR4][R2.64] ;
        /*0020*/                   IMAD.MOV.U32 R0, RZ, RZ, R4 ;
        /*0030*/                   LOP3.LUT R6, R2, 0xf0f0f0f, RZ, 0xc0, !PT ;
        /*0040*/                   STL [R1], R0 ;
        /*0050*/                   IMMA.16832.S8.S8 R8, R4.ROW, R6.COL, R8 ;
        /*0060*/                   EXIT ;
"""


@pytest.mark.mutant
def test_checkers_catch_violations():
    functions = sass_functions(_SYNTHETIC_SASS)
    assert list(functions) == ["_Z6kernelPi"]
    mnemonics = functions["_Z6kernelPi"]
    assert mnemonics[1] == "LDG.E.128.CONSTANT"  # predicate stripped
    assert opcode_problems(mnemonics, ["IMMA", "LDG.E.128"], ["LDL"]) == []
    assert opcode_problems(mnemonics, ["IGMMA"], ["STL"]) == ["missing IGMMA", "forbidden STL present (1x)"]
    assert not opcode_matches("IMMAX", "IMMA")
    assert integer_instruction_count(mnemonics) == 1  # LOP3; IMAD.MOV is a move
    log = (
        "ptxas info    : Compiling entry function '_Z1k' for 'sm_90a'\n"
        "    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n"
        "ptxas info    : Used 40 registers, used 0 barriers, 2048 bytes smem\n"
    )
    assert ptxas_report(log) == {"_Z1k": {"stack": 8, "spill_stores": 4, "spill_loads": 4, "registers": 40,
                                          "static_shared": 2048}}
    with pytest.raises(ValueError, match="SASS must contain"):
        header_opcodes("// nvcc-arch: sm_90a\n")


HOPPER_DEQUANT_BUDGET_PER_8 = 7  # the paper's count: unpack (AND, SHR+AND) + IMAD + XOR per 4


def test_hopper_dequant_instruction_count(build_dir, record_property):
    """The Hopper kernel's dequant (the same device function its main loop inlines) costs at
    most 7 integer instructions per 8 weights; the block's (s, a) split (one PRMT per 8) is
    outside the probe, as in the paper's count."""
    _, sass = compile_sass("w4a8_hopper.cu", "sm_90a", build_dir)
    functions = sass_functions(sass)
    probe = [name for name in functions if DEQUANT_PROBE in name]
    assert len(probe) == 1, f"expected one {DEQUANT_PROBE} in {list(functions)}"
    mnemonics = functions[probe[0]]
    count = integer_instruction_count(mnemonics, uniform=True)
    per_8 = 8 * count / DEQUANT_PROBE_WEIGHTS
    record_property("hopper_dequant_integer_instructions_per_8_weights", per_8)
    assert 0 < per_8 <= HOPPER_DEQUANT_BUDGET_PER_8, f"{per_8} per 8 weights; SASS {mnemonics}"
    igmma = [m for name, ms in functions.items() if "w4a8_hopper" in name for m in ms if opcode_matches(m, "IGMMA")]
    assert igmma, "the Hopper kernel must issue IGMMA"
    # the weights are the A operand from registers: "IGMMA.64xNx32.S8.S8 Rd, Ra, gdesc[..], Rc"
    # (a shared-memory A would read "IGMMA... Rd, gdesc[..], ...")
    assert re.search(r"IGMMA\.\S+\s+R\d+,\s*R\d+,\s*gdesc", sass), "IGMMA must take A from registers"


def test_uniform_forms_are_counted():
    assert integer_instruction_count(["ULOP3.LUT", "USHF.R.U32.HI", "UIMAD.MOV", "LOP3.LUT"], uniform=True) == 3
    assert integer_instruction_count(["ULOP3.LUT", "LOP3.LUT"]) == 1
