"""The word programs against the oracles' word functions, and against what ptxas really emits."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator import isa, machine, programs
from liquidref import dequant_word
from liquidref.baselines import qoq_dequant_word, vadd4
from liquidref.constants import BYTE_BROADCAST, LOW_NIBBLES

u32 = st.integers(0, 2**32 - 1)


def _run_word(program, word, s_lo, off_lo, s_hi, off_hi):
    regs = machine.new_registers(program, 1)
    names = list(program.inputs)  # P, s_lo, <offset>_lo, s_hi, <offset>_hi
    for name, value in zip(names, (word, s_lo, off_lo, s_hi, off_hi)):
        regs[0, program.inputs[name]] = value
    machine.execute(program, regs)
    return [int(regs[0, r]) for r in program.outputs["weights"]]


@given(word=u32, s_lo=st.integers(1, 16), s_hi=st.integers(1, 16), a_lo=st.integers(0, 255),
       a_hi=st.integers(0, 255))
def test_lqq_program_equals_dequant_word(word, s_lo, s_hi, a_lo, a_hi):
    got = _run_word(programs.lqq_dequant_program(), word, s_lo, a_lo * BYTE_BROADCAST, s_hi,
                    a_hi * BYTE_BROADCAST)
    lo, hi = word & LOW_NIBBLES, (word >> 4) & LOW_NIBBLES
    expected = dequant_word(np.array([lo, hi], np.uint32), np.array([s_lo, s_hi]), np.array([a_lo, a_hi]))
    assert got == [int(x) for x in expected]


@given(word=u32, s_lo=st.integers(1, 17), s_hi=st.integers(1, 17), z_lo=st.integers(0, 255),
       z_hi=st.integers(0, 255))
def test_qoq_program_equals_qserve_word(word, s_lo, s_hi, z_lo, z_hi):
    got = _run_word(programs.qoq_dequant_program(), word, s_lo, z_lo * BYTE_BROADCAST, s_hi,
                    z_hi * BYTE_BROADCAST)
    lo, hi = word & LOW_NIBBLES, (word >> 4) & LOW_NIBBLES
    expected = qoq_dequant_word(np.array([lo, hi], np.uint32), np.array([s_lo, s_hi]), np.array([z_lo, z_hi]))
    assert got == [int(x) for x in expected]


@given(a=u32, b=u32)
def test_vadd4_macro_is_a_carry_free_per_byte_add(a, b):
    builder = isa.ProgramBuilder("vadd4")
    x, y = builder.param("x"), builder.param("y")
    out = builder.vadd4(x, y)
    program = builder.build()
    regs = machine.new_registers(program, 1)
    regs[0, [x, y]] = [a, b]
    regs, tr = machine.trace(program, regs)
    assert int(regs[0, out]) == int(vadd4(np.array([a], np.uint32), np.array([b], np.uint32))[0])
    assert int(regs[0, out]) == sum((((a >> 8 * i) + (b >> 8 * i)) & 0xFF) << 8 * i for i in range(4))
    assert not tr.carry.any()  # its inner IADD3 never carries across a lane


def test_instruction_counts_per_8_weights():
    counts = {name: p.counts("unpack")["total"] + p.counts("dequant")["total"]
              for name, p in (("lqq", programs.lqq_dequant_program()),
                              ("qoq", programs.qoq_dequant_program()),
                              ("naive", programs.naive_dequant_program()))}
    assert counts == {"lqq": 7, "qoq": 3 + 2 * (1 + 5), "naive": 5}  # the paper: 7 per 8 for LQQ
    lqq = programs.lqq_dequant_program().counts()
    assert (lqq["IMAD"], lqq["LOP3"], lqq["SHF"]) == (2, 4, 1)


def test_listing_and_builder_errors():
    text = programs.lqq_dequant_program().listing().splitlines()
    assert text[0] == "SHF.R.U32.HI R5, RZ, 0x4, R0"
    assert text[3] == "IMAD R8, R6, R1, R2"
    builder = isa.ProgramBuilder("bad")
    r = builder.reg("r")
    with pytest.raises(ValueError, match="at most one immediate"):
        builder.imad(r, isa.Imm(1), isa.Imm(2))
    with pytest.raises(ValueError, match="32 bits"):
        isa.Imm(2**32)
    with pytest.raises(ValueError, match="width"):
        builder.lds(r, width=96)
    with pytest.raises(ValueError, match="used twice"):
        builder.reg("r")
    builder.begin("x")
    with pytest.raises(ValueError, match="not closed"):
        builder.build()


# --- the emulator's sequences are the compiler's --------------------------------------------
NVCC = shutil.which("nvcc")
CUOBJDUMP = next(iter(Path(np.__file__).parents[1].glob("nvidia/cu*/bin/cuobjdump")), None) or \
    shutil.which("cuobjdump")

SASS_SOURCE = r"""
extern "C" __global__ void lqq(unsigned* out_lo, unsigned* out_hi, const unsigned* p,
                               unsigned s0, unsigned a0, unsigned s1, unsigned a1) {
  unsigned w = p[threadIdx.x];
  unsigned lo = w & 0x0F0F0F0Fu, hi = (w >> 4) & 0x0F0F0F0Fu;
  out_lo[threadIdx.x] = (lo * s0 + a0) ^ 0x80808080u;
  out_hi[threadIdx.x] = (hi * s1 + a1) ^ 0x80808080u;
}
extern "C" __global__ void vadd(unsigned* out, const unsigned* a, const unsigned* b) {
  out[threadIdx.x] = __vadd4(a[threadIdx.x], b[threadIdx.x]);
}
"""
ALU = re.compile(r"\b(LOP3\.LUT|SHF\.\S+|IMAD(?!\.WIDE|\.SHL)\S*|IADD3|PRMT)\b")


@pytest.mark.skipif(NVCC is None or CUOBJDUMP is None, reason="needs nvcc and cuobjdump")
def test_programs_match_the_sass_ptxas_emits(tmp_path):
    source = tmp_path / "k.cu"
    source.write_text(SASS_SOURCE)
    cubin = tmp_path / "k.cubin"
    subprocess.run([NVCC, "-gencode=arch=compute_90a,code=sm_90a", "-cubin", "-o", str(cubin),
                    str(source)], check=True, capture_output=True)
    sass = subprocess.run([str(CUOBJDUMP), "-sass", str(cubin)], check=True, capture_output=True,
                          text=True).stdout
    functions = dict(re.findall(r"Function : (\w+)\n(.*?)(?=\n\s*\.+\n|Function :|\Z)", sass, re.S))
    ops = {name: [m.split(".")[0] for m in ALU.findall(body)] for name, body in functions.items()}
    ours = {
        "lqq": programs.lqq_dequant_program(),
        "vadd": (lambda b: (b.vadd4(b.param("a"), b.param("b")), b.build())[1])(
            isa.ProgramBuilder("v")),
    }
    for name, program in ours.items():
        emitted = sorted(isa.OPCODE_NAMES[op] for op in program.code[:, isa.F_OP])
        compiled = sorted("IADD" if op == "IADD3" else "LOP3" if op == "LOP3" else op
                          for op in ops[name])
        assert emitted == compiled, (name, emitted, compiled)
