"""The interpreter: 32-bit ALU semantics (against Python integers), memory, banks, fault injection."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator import isa, machine
from emulator.isa import Imm, ProgramBuilder

u32 = st.integers(0, 2**32 - 1)
MASK = 2**32 - 1


def _byte(x, i):
    return (x >> (8 * i)) & 0xFF


def reference(op, a, b, c, imm2):
    """Python-integer semantics of each ALU opcode (the spec the interpreter must match)."""
    if op == isa.MOV:
        return a
    if op == isa.LOP3:
        return sum(((imm2 >> ((((a >> bit) & 1) << 2) | (((b >> bit) & 1) << 1) | ((c >> bit) & 1))) & 1) << bit
                   for bit in range(32))
    if op == isa.SHF:
        shift = min(b, 32)
        wide = (c << 32) | a
        if imm2 == isa.SHF_R_HI:
            return (wide >> shift) >> 32
        if imm2 == isa.SHF_R_LO:
            return (wide >> shift) & MASK
        if imm2 == isa.SHF_L_LO:
            return (wide << shift) & MASK
        return ((wide << shift) >> 32) & MASK
    if op == isa.SHR:
        return a >> b if b < 32 else 0
    if op == isa.SHL:
        return (a << b) & MASK if b < 32 else 0
    if op == isa.IMAD:
        return (a * b + c) & MASK
    if op == isa.IMUL:
        return (a * b) & MASK
    if op == isa.IADD:
        return (a + b + c) & MASK
    if op == isa.PRMT:
        pool = (c << 32) | a
        out = 0
        for i in range(4):
            sel = (b >> (4 * i)) & 0xF
            byte = (pool >> (8 * (sel & 7))) & 0xFF
            if sel & 8:
                byte = 0xFF if byte & 0x80 else 0
            out |= byte << (8 * i)
        return out
    raise AssertionError(op)


ALU_OPS = [isa.MOV, isa.LOP3, isa.SHF, isa.SHR, isa.SHL, isa.IMAD, isa.IMUL, isa.IADD, isa.PRMT]


def test_numba_widens_uint32_arithmetic_so_the_interpreter_must_wrap():
    # The hazard the interpreter guards against: Numba computes uint32 * uint32 in 64 bits.
    @numba.njit
    def multiply(x, y):
        return x * y

    product = multiply(np.uint32(0xFFFFFFFF), np.uint32(16))
    assert int(product) == 0xFFFFFFFF * 16 > MASK


@given(op=st.sampled_from(ALU_OPS), a=u32, b=u32, c=u32, lut=st.integers(0, 255),
       variant=st.integers(0, 3), small=st.integers(0, 40))
def test_alu_matches_python_modular_arithmetic(op, a, b, c, lut, variant, small):
    imm2 = lut if op == isa.LOP3 else variant if op == isa.SHF else 0
    if op in (isa.SHF, isa.SHR, isa.SHL):
        b = small  # shifts: amounts around the 32 boundary
    got = machine.alu(op, np.uint64(a), np.uint64(b), np.uint64(c), imm2, machine.FAULT_NONE)
    assert int(got) == reference(op, a, b, c, imm2)
    assert 0 <= int(got) <= MASK


@pytest.mark.parametrize("a, b, c", [(MASK, MASK, MASK), (0x80000000, 2, 0), (0x0F0F0F0F, 17, MASK)])
def test_imad_wraps_at_32_bits_edges(a, b, c):
    got = machine.alu(isa.IMAD, np.uint64(a), np.uint64(b), np.uint64(c), 0, machine.FAULT_NONE)
    assert int(got) == (a * b + c) % 2**32


@pytest.mark.mutant
def test_mutant_imad_without_wrap_is_caught():
    # The fault keeps the bits above 31: the ALU property and the register write-back catch it.
    a, b, c = MASK, 16, 1
    unwrapped = machine.alu(isa.IMAD, np.uint64(a), np.uint64(b), np.uint64(c), 0,
                            machine.FAULT_IMAD_NO_WRAP)
    assert int(unwrapped) != reference(isa.IMAD, a, b, c, 0)
    builder = ProgramBuilder("imad")
    x = builder.param("x")
    builder.imad(x, Imm(16), Imm(16))
    program = builder.build()
    regs = machine.new_registers(program, 2)
    regs[:, x] = [1, 0xFFFFFFFF]
    with pytest.raises(RuntimeError, match="more than 32 bits"):
        machine.execute(program, regs.copy(), _faults=machine.FAULT_IMAD_NO_WRAP)
    assert list(machine.execute(program, regs)[:, 1]) == [32, 0]  # (2^32 - 1) * 16 + 16 wraps to 0


def _loader(width, offset=0):
    b = ProgramBuilder("load")
    address = b.param("address")
    b.lds(address, offset=offset, width=width)
    return b.build(), address


def test_lds_is_little_endian_and_fills_consecutive_registers():
    program, address = _loader(128)
    shared = np.arange(64, dtype=np.uint8)
    regs = machine.new_registers(program, 2)
    regs[:, address] = [0, 16]
    machine.execute(program, regs, shared)
    assert regs[0, 1] == 0x03020100 and regs[0, 4] == 0x0F0E0D0C
    assert regs[1, 1] == 0x13121110


@pytest.mark.parametrize("address, message", [(4, "misaligned"), (64, "out of bounds")])
def test_bad_addresses_raise_with_instruction_and_lane(address, message):
    program, reg = _loader(64)
    regs = machine.new_registers(program, 3)
    regs[2, reg] = address
    with pytest.raises(RuntimeError, match=rf"instruction 0 `LDS.64.*lane 2: .*{message}"):
        machine.execute(program, regs, np.zeros(64, np.uint8))


def test_sts_then_lds_round_trip_and_ldg_sectors():
    b = ProgramBuilder("copy")
    tid = b.s2r_tid()
    address = b.imad(tid, Imm(16), isa.RZ)
    data = b.ldg(address, width=128)
    b.sts(address, data, width=128)
    program = b.build()
    global_ = np.random.default_rng(1).integers(0, 256, 32 * 16).astype(np.uint8)
    shared = np.zeros_like(global_)
    _, tr = machine.trace(program, machine.new_registers(program, 32), shared, global_)
    assert np.array_equal(shared, global_)
    assert machine.global_sectors(tr) == [(2, 0, 16)]  # 512 contiguous bytes: 16 sectors


def _wavefronts(width, addresses):
    program, reg = _loader(width)
    regs = machine.new_registers(program, 32)
    regs[:, reg] = addresses
    _, tr = machine.trace(program, regs, np.zeros(4096, np.uint8))
    (report,) = machine.shared_wavefronts(tr)
    return report


def test_bank_model_phases_broadcast_and_conflicts():
    lanes = np.arange(32)
    ideal128 = _wavefronts(128, 16 * lanes)
    assert (ideal128.phases, ideal128.wavefronts, ideal128.conflicts) == (4, 4, 0)
    assert (ideal128.bank_words == 1).all()
    ideal64 = _wavefronts(64, 8 * lanes)
    assert (ideal64.phases, ideal64.wavefronts) == (2, 2)
    broadcast = _wavefronts(32, np.zeros(32, np.int64))  # every lane the same word
    assert broadcast.wavefronts == 1
    two_way = _wavefronts(32, 4 * (lanes % 16) + 128 * (lanes // 16))  # banks reused, new words
    assert (two_way.wavefronts, two_way.conflicts) == (2, 1)
    worst = _wavefronts(32, 128 * lanes)  # every lane bank 0, distinct words
    assert worst.wavefronts == 32


def test_tracing_and_value_executors_agree():
    b = ProgramBuilder("mix")
    tid = b.s2r_tid()
    x = b.imad(tid, Imm(0x01010101), tid)
    y = b.prmt(x, Imm(0x3210))
    b.vadd4(y, x)
    program = b.build()
    values = machine.execute(program, machine.new_registers(program, 64))
    traced, _ = machine.trace(program, machine.new_registers(program, 64))
    assert np.array_equal(values, traced)


def test_input_errors_are_clear():
    program, _ = _loader(32)
    with pytest.raises(TypeError, match="uint32"):
        machine.execute(program, np.zeros((2, 4), np.int64))
    with pytest.raises(ValueError, match="registers per lane"):
        machine.execute(program, np.zeros((2, 1), np.uint32))
    with pytest.raises(TypeError, match="uint8"):
        machine.execute(program, machine.new_registers(program, 1), np.zeros(4, np.int32))
    with pytest.raises(TypeError, match="Program"):
        machine.execute("IMAD", machine.new_registers(program, 1))
    with pytest.raises(ValueError, match="lanes"):
        machine.new_registers(program, 0)
