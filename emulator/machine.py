"""The two executors: run a ``Program`` on many lanes, for values or with a full trace.

State of an execution:

- ``regs``: uint32 [lanes, n_regs], one 32-bit register file per lane. Lane ``i`` is thread
  ``i`` of the executed group; warps are lanes ``32 w .. 32 w + 31``.
- ``shared``: uint8 [bytes], byte-addressed shared memory (32 banks of 4 bytes: the bank of byte
  address ``x`` is ``(x // 4) % 32``).
- ``global_``: uint8 [bytes], byte-addressed global memory.

All lanes execute one instruction before any lane starts the next (a warp in lock-step, and a
warpgroup as four such warps in step with each other).

``execute`` returns the final register file. ``trace`` returns it too, with a ``Trace`` of every
memory access (instruction, lane, byte address) and, for the instructions a program marks as
byte-lane arithmetic (``isa.CHECK_*``), the exact value of every byte lane and whether it left
its byte (a *carry*: in a 32-bit register the excess lands in the next lane) or whether the
32-bit result differs from the per-byte arithmetic (a *corrupted* byte). Both executors run the
same interpreter (``_interpret``), so a program cannot behave differently under the two.

Numba and 32 bits: Numba widens uint32 scalar arithmetic to 64 bits (``uint32 * uint32`` is a
``uint64``), so the interpreter computes in uint64 and wraps *every* result explicitly with
``& 0xFFFFFFFF`` (``tests/emulator/test_machine.py`` shows the widening and tests the wrap).

What the emulator does NOT model: instruction latency, issue and scheduling (warps never stall,
nothing overlaps), the register-reuse cache and register-bank conflicts, predication and
divergence, asynchronous copies (TMA/bulk copies, cp.async) and mbarriers, L1/L2 caches and DRAM
(global memory is a flat byte array; only 32-byte sectors per request are counted), the
tensor core itself (the wgmma operands are checked, the multiply is done by ``liquidref``), and
shared-memory timing beyond the wavefront count of one request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from . import isa

# Fault injection for the mutation tests (``tests/emulator/test_mutants.py``); the public
# executors always pass FAULT_NONE.
FAULT_NONE = 0
FAULT_IMAD_NO_WRAP = 1  # IMAD keeps the bits above 31 (what Numba would do if not told)

# Status codes of ``_interpret``.
OK, ERR_MISALIGNED, ERR_OUT_OF_BOUNDS, ERR_REGISTER_OVERFLOW = 0, 1, 2, 3

BANKS = 32
BANK_WIDTH = 4
SECTOR_BYTES = 32
WARP_SIZE = 32


@numba.njit(cache=True, inline="always")
def _read(regs, lane, index, imm):
    """The uint64 value of operand ``index`` (register, RZ or IMM)."""
    if index == -1:  # RZ
        return np.uint64(0)
    if index == -2:  # IMM
        return np.uint64(imm)
    return np.uint64(regs[lane, index])


@numba.njit(cache=True)
def alu(op, a, b, c, imm2, faults):
    """The value of one ALU instruction on uint64 operands < 2^32, wrapped to 32 bits.

    ``faults`` is ``FAULT_NONE`` except in mutation tests.
    """
    mask = np.uint64(0xFFFFFFFF)
    if op == 1:  # MOV
        return a & mask
    if op == 2:  # LOP3: for every bit, the truth table entry indexed by (a, b, c)
        result = np.uint64(0)
        lut = np.uint64(imm2)
        for minterm in range(8):
            if (lut >> np.uint64(minterm)) & np.uint64(1):
                term_a = a if minterm & 4 else ~a
                term_b = b if minterm & 2 else ~b
                term_c = c if minterm & 1 else ~c
                result |= term_a & term_b & term_c
        return result & mask
    if op == 3:  # SHF: funnel shift of {c:a} (c the high word), shift clamped to 32
        shift = b if b < np.uint64(32) else np.uint64(32)
        if imm2 == 0:  # R.HI: high word of ({c:a} >> s) = c >> s
            return (c >> shift) & mask if shift < np.uint64(32) else np.uint64(0)
        wide = (c << np.uint64(32)) | a
        if imm2 == 1:  # R.LO
            return (wide >> shift) & mask
        if imm2 == 2:  # L.LO: low word of ({c:a} << s) = a << s
            return (a << shift) & mask if shift < np.uint64(32) else np.uint64(0)
        # L.HI: high word of ({c:a} << s)
        return ((wide << shift) >> np.uint64(32)) & mask if shift < np.uint64(32) else a & mask
    if op == 4:  # SHR
        return (a >> b) & mask if b < np.uint64(32) else np.uint64(0)
    if op == 5:  # SHL
        return (a << b) & mask if b < np.uint64(32) else np.uint64(0)
    if op == 6:  # IMAD
        if faults & 1:
            return a * b + c
        return (a * b + c) & mask
    if op == 7:  # IMUL
        return (a * b) & mask
    if op == 8:  # IADD (IADD3)
        return (a + b + c) & mask
    if op == 9:  # PRMT {c:a} by selector b (default mode)
        pool = (c << np.uint64(32)) | a
        result = np.uint64(0)
        for i in range(4):
            nibble = (b >> np.uint64(4 * i)) & np.uint64(0xF)
            byte = (pool >> (np.uint64(8) * (nibble & np.uint64(7)))) & np.uint64(0xFF)
            if nibble & np.uint64(8):  # replicate the sign bit of the chosen byte
                byte = np.uint64(0xFF) if byte & np.uint64(0x80) else np.uint64(0)
            result |= byte << np.uint64(8 * i)
        return result
    return np.uint64(0)


@numba.njit(cache=True)
def _lane_values(check, ca, cb, cc, out):
    """Exact per-byte values of a byte-lane instruction into ``out`` (int64 [4])."""
    for i in range(4):
        shift = np.uint64(8 * i)
        byte_a = np.int64((ca >> shift) & np.uint64(0xFF))
        byte_b = np.int64((cb >> shift) & np.uint64(0xFF))
        byte_c = np.int64((cc >> shift) & np.uint64(0xFF))
        if check == 1:  # MAD_U8: byte_i(a) * b + byte_i(c), b a scalar
            out[i] = byte_a * np.int64(cb) + byte_c
        else:  # ADD_U8
            out[i] = byte_a + byte_b


@numba.njit(cache=True)
def _interpret(code, regs, shared, global_, tracing, faults, mem_address, lane_value,
               carry, corrupt):
    """Run ``code`` on every lane of ``regs`` (in place).

    With ``tracing``, fills ``mem_address`` (int64 [n_instr, lanes], -1 where no access),
    ``lane_value`` (int64 [n_instr, lanes, 4]), ``carry`` and ``corrupt`` (bool [n_instr, lanes,
    4]) for instructions with a byte-lane check. Returns (status, instruction, lane).
    """
    lanes = regs.shape[0]
    values = np.zeros(4, np.int64)
    for i in range(code.shape[0]):
        op = code[i, 0]
        dst = code[i, 1]
        ia = code[i, 2]
        ib = code[i, 3]
        ic = code[i, 4]
        imm = code[i, 5]
        imm2 = code[i, 6]
        check = code[i, 7]
        for lane in range(lanes):
            if op == 0:  # S2R
                regs[lane, dst] = np.uint32(lane)
                continue
            if op == 10 or op == 11 or op == 12:  # LDS, LDG, STS
                address = np.int64(_read(regs, lane, ia, imm)) + imm
                nbytes = imm2 // 8
                memory = global_ if op == 11 else shared
                if address % nbytes != 0:
                    return ERR_MISALIGNED, i, lane
                if address < 0 or address + nbytes > memory.shape[0]:
                    return ERR_OUT_OF_BOUNDS, i, lane
                if tracing:
                    mem_address[i, lane] = address
                for w in range(nbytes // 4):
                    base = address + 4 * w
                    if op == 12:
                        word = regs[lane, ib + w]
                        for j in range(4):
                            memory[base + j] = np.uint8((word >> np.uint32(8 * j)) & np.uint32(0xFF))
                    else:
                        word = np.uint64(0)
                        for j in range(4):
                            word |= np.uint64(memory[base + j]) << np.uint64(8 * j)
                        regs[lane, dst + w] = np.uint32(word)
                continue
            a = _read(regs, lane, ia, imm)
            b = _read(regs, lane, ib, imm)
            c = _read(regs, lane, ic, imm)
            result = alu(op, a, b, c, imm2, faults)
            if tracing and check != 0:
                ca = _read(regs, lane, code[i, 8], imm)
                cb = _read(regs, lane, code[i, 9], imm)
                cc = _read(regs, lane, code[i, 10], imm)
                _lane_values(check, ca, cb, cc, values)
                for j in range(4):
                    lane_value[i, lane, j] = values[j]
                    carry[i, lane, j] = values[j] > 255
                    byte = np.int64((result >> np.uint64(8 * j)) & np.uint64(0xFF))
                    corrupt[i, lane, j] = byte != (values[j] & 0xFF)
            if result > np.uint64(0xFFFFFFFF):
                return ERR_REGISTER_OVERFLOW, i, lane
            regs[lane, dst] = np.uint32(result)
    return OK, -1, -1


@dataclass(frozen=True)
class Trace:
    """What the tracing executor recorded.

    Attributes:
        program: the program that ran.
        mem_address: int64 [n_instr, lanes], the byte address each lane accessed (-1: none).
        lane_value: int64 [n_instr, lanes, 4], exact byte-lane values of checked instructions.
        carry: bool [n_instr, lanes, 4], the lane value left its byte (> 255): in a 32-bit
            register the excess carries into the next lane.
        corrupt: bool [n_instr, lanes, 4], the 32-bit result's byte differs from the lane value
            modulo 256 (a carry from the lane below arrived).
    """

    program: isa.Program
    mem_address: np.ndarray
    lane_value: np.ndarray
    carry: np.ndarray
    corrupt: np.ndarray

    def checked_rows(self) -> np.ndarray:
        """Indices of the instructions with a byte-lane check."""
        return np.flatnonzero(self.program.code[:, isa.F_CHECK] != isa.CHECK_NONE)

    def lane_carries(self) -> np.ndarray:
        """bool [lanes]: any byte-lane check of this lane carried."""
        return self.carry.any(axis=(0, 2))


def _prepare(program, regs, shared, global_):
    if not isinstance(program, isa.Program):
        raise TypeError(f"expected an emulator.isa.Program; got {type(program).__name__}")
    if not isinstance(regs, np.ndarray) or regs.dtype != np.uint32 or regs.ndim != 2:
        raise TypeError("regs must be a uint32 numpy array [lanes, n_regs]")
    if regs.shape[1] < program.n_regs:
        raise ValueError(f"{program.name} needs {program.n_regs} registers per lane; "
                         f"regs has {regs.shape[1]}")
    shared = np.zeros(0, np.uint8) if shared is None else shared
    global_ = np.zeros(0, np.uint8) if global_ is None else global_
    for name, mem in (("shared", shared), ("global_", global_)):
        if not isinstance(mem, np.ndarray) or mem.dtype != np.uint8 or mem.ndim != 1:
            raise TypeError(f"{name} must be a 1-D uint8 numpy array (byte-addressed memory)")
    return regs, shared, global_


def _raise(program, status, instr, lane):
    if status == OK:
        return
    text = isa.format_instruction(program.code[instr])
    reason = {
        ERR_MISALIGNED: "misaligned address (a load/store of n bytes needs an n-byte aligned address)",
        ERR_OUT_OF_BOUNDS: "address out of bounds of the memory array",
        ERR_REGISTER_OVERFLOW: "a result has more than 32 bits (a missing 32-bit wrap)",
    }[status]
    raise RuntimeError(f"{program.name}: instruction {instr} `{text}`, lane {lane}: {reason}")


def new_registers(program: isa.Program, lanes: int) -> np.ndarray:
    """A zeroed register file uint32 [lanes, program.n_regs]."""
    if lanes <= 0:
        raise ValueError(f"lanes must be positive; got {lanes}")
    return np.zeros((lanes, program.n_regs), np.uint32)


def execute(program, regs, shared=None, global_=None, *, _faults=FAULT_NONE):
    """Value executor: run ``program`` on every lane of ``regs`` and return ``regs``.

    Args:
        program: an ``isa.Program``.
        regs: uint32 [lanes, >= program.n_regs], updated in place (preset the program's inputs).
        shared: uint8 [bytes] shared memory (updated by stores), or None.
        global_: uint8 [bytes] global memory, or None.

    Raises:
        RuntimeError: a misaligned or out-of-bounds access, naming instruction and lane.
    """
    regs, shared, global_ = _prepare(program, regs, shared, global_)
    dummy_addr = np.zeros((0, 0), np.int64)
    dummy_value = np.zeros((0, 0, 4), np.int64)
    dummy_flag = np.zeros((0, 0, 4), np.bool_)
    status, instr, lane = _interpret(program.code, regs, shared, global_, False, _faults,
                                     dummy_addr, dummy_value, dummy_flag, dummy_flag)
    _raise(program, status, instr, lane)
    return regs


def trace(program, regs, shared=None, global_=None, *, _faults=FAULT_NONE):
    """Tracing executor: like ``execute``, and also return a ``Trace`` of the run."""
    regs, shared, global_ = _prepare(program, regs, shared, global_)
    n, lanes = len(program), regs.shape[0]
    mem_address = np.full((n, lanes), -1, np.int64)
    lane_value = np.zeros((n, lanes, 4), np.int64)
    carry = np.zeros((n, lanes, 4), np.bool_)
    corrupt = np.zeros((n, lanes, 4), np.bool_)
    status, instr, lane = _interpret(program.code, regs, shared, global_, True, _faults,
                                     mem_address, lane_value, carry, corrupt)
    _raise(program, status, instr, lane)
    return regs, Trace(program, mem_address, lane_value, carry, corrupt)


# --- shared-memory banks and wavefronts --------------------------------------------------------
def phases_of(width_bits: int) -> int:
    """How many phases a warp's shared-memory request of this width is served in.

    LDS.128: 4 phases of 8 threads; LDS.64: 2 phases of 16; LDS.32: one phase of 32.
    """
    return {32: 1, 64: 2, 128: 4}[width_bits]


@dataclass(frozen=True)
class WavefrontReport:
    """Bank accounting of one warp's shared-memory instruction.

    Attributes:
        instruction: row of the instruction in the program.
        warp: warp index in the executed group.
        phases: phases the request is served in (4 for LDS.128).
        wavefronts: wavefronts needed (= phases when conflict-free).
        bank_words: int64 [phases, 32], distinct 4-byte words requested from each bank in each
            phase (a bank serves one word per wavefront; several lanes reading the same word
            is a broadcast and costs nothing).
    """

    instruction: int
    warp: int
    phases: int
    wavefronts: int
    bank_words: np.ndarray

    @property
    def conflicts(self) -> int:
        """Extra wavefronts caused by bank conflicts."""
        return self.wavefronts - self.phases


def shared_wavefronts(tr: Trace) -> list[WavefrontReport]:
    """Per warp and shared-memory instruction (LDS/STS): phases, bank words and wavefronts.

    Model: the warp's request is split into phases of ``32 / (width / 32)`` consecutive lanes;
    in each phase every bank serves one distinct 4-byte word per wavefront, so the phase costs
    ``max(1, max over banks of distinct words)`` wavefronts.
    """
    code = tr.program.code
    lanes = tr.mem_address.shape[1]
    reports = []
    for i in np.flatnonzero(np.isin(code[:, isa.F_OP], (isa.LDS, isa.STS))):
        width = int(code[i, isa.F_IMM2])
        phases = phases_of(width)
        per_phase = WARP_SIZE // phases
        for warp in range(-(-lanes // WARP_SIZE)):
            addresses = tr.mem_address[i, warp * WARP_SIZE:(warp + 1) * WARP_SIZE]
            bank_words = np.zeros((phases, BANKS), np.int64)
            for phase in range(phases):
                chunk = addresses[phase * per_phase:(phase + 1) * per_phase]
                chunk = chunk[chunk >= 0]
                words = (chunk[:, None] // BANK_WIDTH + np.arange(width // 32)[None, :]).ravel()
                for bank in range(BANKS):
                    bank_words[phase, bank] = np.unique(words[words % BANKS == bank]).size
            wavefronts = int(np.maximum(bank_words.max(axis=1), 1).sum())
            reports.append(WavefrontReport(int(i), warp, phases, wavefronts, bank_words))
    return reports


def global_sectors(tr: Trace) -> list[tuple[int, int, int]]:
    """Per warp and LDG: (instruction, warp, distinct 32-byte sectors touched)."""
    code = tr.program.code
    lanes = tr.mem_address.shape[1]
    result = []
    for i in np.flatnonzero(code[:, isa.F_OP] == isa.LDG):
        nbytes = int(code[i, isa.F_IMM2]) // 8
        for warp in range(-(-lanes // WARP_SIZE)):
            addresses = tr.mem_address[i, warp * WARP_SIZE:(warp + 1) * WARP_SIZE]
            addresses = addresses[addresses >= 0]
            first = addresses // SECTOR_BYTES
            last = (addresses + nbytes - 1) // SECTOR_BYTES
            sectors = set()
            for f, g in zip(first.tolist(), last.tolist()):
                sectors.update(range(f, g + 1))
            result.append((int(i), warp, len(sectors)))
    return result
