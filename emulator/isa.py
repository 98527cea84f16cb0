"""The emulator's instruction set: a small SASS-like ISA encoded as rows of an int64 array.

A *program* is what one thread executes; every lane of a warp (or warpgroup) runs the same
instructions in lock-step. Programs are built once in Python with ``ProgramBuilder`` and run by
the two executors of ``emulator.machine`` (values, or values plus a trace of every access).

Encoding: one instruction per row of ``Program.code`` (int64 [n, N_FIELDS])::

    column  OP   DST  A    B    C    IMM   IMM2   CHECK  CA   CB   CC
            op   reg  src  src  src  imm   (LUT / width / direction)  lane check and its sources

Source operands ``A``, ``B``, ``C`` name a register ``0..n_regs-1`` or one of two pseudo
registers: ``RZ`` (reads 0, as SASS's RZ) and ``IMM`` (reads the row's ``IMM`` field).

Opcodes and their semantics (all results wrap to 32 bits, as the hardware does):

=========  ====================================================================================
S2R        DST = this lane's thread index in the executed group (SR_TID.X)
MOV        DST = A
LOP3       DST = LUT(A, B, C) bitwise; IMM2 = the 8-bit truth table (0xC0 = A&B, 0xFC = A|B,
           0x3C = A^B, with C = RZ: how ptxas emits AND/OR/XOR)
SHF        funnel shift of the 64-bit pair {C:A} by B (clamped to 32) ; IMM2 = SHF_R_HI,
           SHF_R_LO, SHF_L_LO or SHF_L_HI says direction and which half is kept
SHR / SHL  DST = A >> B / A << B (logical; a shift of 32 or more gives 0)
IMAD       DST = A * B + C  (mod 2^32)
IMUL       DST = A * B      (mod 2^32)
IADD       DST = A + B + C  (mod 2^32; SASS IADD3)
PRMT       DST = byte permute of the 8 bytes {C:A} by selector B (default mode; bit 3 of a
           selector nibble replicates the sign bit of the chosen byte)
LDS        DST.. = shared[A + IMM], IMM2 = 32, 64 or 128 bits (1, 2 or 4 registers), little-endian
LDG        DST.. = global[A + IMM], IMM2 = 32, 64 or 128 bits
STS        shared[A + IMM] = B.., IMM2 = 32, 64 or 128 bits
=========  ====================================================================================

``CHECK`` marks instructions that are *meant* to act on four independent byte lanes; the tracing
executor checks that claim per lane (see ``emulator.machine``):

- ``CHECK_MAD_U8``: lane value ``byte_i(CA) * CB + byte_i(CC)`` (unsigned) must stay <= 255;
- ``CHECK_ADD_U8``: lane value ``byte_i(CA) + byte_i(CB)`` (unsigned) must stay <= 255.

Not modelled by this ISA: predication and divergence, special registers other than the thread
index, uniform registers and constant banks (kernel parameters are pre-set registers),
instruction latencies, dual issue and register-bank conflicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# --- opcodes ---------------------------------------------------------------------------------
S2R, MOV, LOP3, SHF, SHR, SHL, IMAD, IMUL, IADD, PRMT, LDS, LDG, STS = range(13)
OPCODE_NAMES = ("S2R", "MOV", "LOP3", "SHF", "SHR", "SHL", "IMAD", "IMUL", "IADD", "PRMT",
                "LDS", "LDG", "STS")
MEMORY_OPS = (LDS, LDG, STS)

# --- fields of an encoded instruction ---------------------------------------------------------
F_OP, F_DST, F_A, F_B, F_C, F_IMM, F_IMM2, F_CHECK, F_CA, F_CB, F_CC = range(11)
N_FIELDS = 11

# --- pseudo registers -------------------------------------------------------------------------
RZ = -1  # reads as 0
IMM = -2  # reads the instruction's immediate

# --- SHF variants (IMM2 of SHF) ---------------------------------------------------------------
SHF_R_HI, SHF_R_LO, SHF_L_LO, SHF_L_HI = range(4)

# --- byte-lane checks (CHECK column) ----------------------------------------------------------
CHECK_NONE, CHECK_MAD_U8, CHECK_ADD_U8 = range(3)

# --- LOP3 truth tables: inputs A = 0xF0, B = 0xCC, C = 0xAA -----------------------------------
LUT_A, LUT_B, LUT_C = 0xF0, 0xCC, 0xAA
LUT_AND = LUT_A & LUT_B  # 0xC0
LUT_OR = LUT_A | LUT_B  # 0xFC
LUT_XOR = LUT_A ^ LUT_B  # 0x3C
LUT_B_AND_A_XOR_C = LUT_B & (LUT_A ^ LUT_C)  # 0x48, used by ptxas' lowering of __vadd4

MASK32 = 0xFFFFFFFF

# Instruction classes for counting (see ``Program.counts``).
LOAD_CLASS = "load"
ALU_CLASS = "alu"


@dataclass
class Program:
    """A straight-line program for one thread, with named sections for instruction counts.

    Attributes:
        name: a label for messages and figures.
        code: int64 [n, N_FIELDS], one encoded instruction per row (see the module docstring).
        n_regs: registers each lane needs.
        sections: name -> (first row, end row) of a part of the program, e.g. ``"prologue"``
            (address set-up, once per kernel), ``"metadata"`` (once per block), ``"unpack"`` and
            ``"dequant"``.
        outputs: names -> register indices the caller reads back (e.g. ``"frag"``: the 8
            dequantized A-fragment registers of a block, in order).
        inputs: names -> register indices the caller sets before running (kernel parameters).
    """

    name: str
    code: np.ndarray
    n_regs: int
    sections: dict[str, tuple[int, int]] = field(default_factory=dict)
    outputs: dict[str, list[int]] = field(default_factory=dict)
    inputs: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.code.shape[0])

    def counts(self, section: str | None = None) -> dict[str, int]:
        """Instructions in ``section`` (or the whole program) by opcode name, plus totals."""
        start, end = self.sections[section] if section else (0, len(self))
        ops = self.code[start:end, F_OP]
        result = {OPCODE_NAMES[op]: int((ops == op).sum()) for op in np.unique(ops)}
        result["total"] = int(end - start)
        result["loads"] = int(np.isin(ops, (LDS, LDG)).sum())
        return result

    def listing(self) -> str:
        """A SASS-like text listing, one instruction per line (for docs and error messages)."""
        return "\n".join(format_instruction(row) for row in self.code)


def _operand(index: int, imm: int) -> str:
    if index == RZ:
        return "RZ"
    if index == IMM:
        return f"{imm:#x}"
    return f"R{index}"


def format_instruction(row) -> str:
    """One encoded instruction as SASS-like text, e.g. ``IMAD R4, R0, R8, R9``."""
    op, dst, a, b, c, imm, imm2 = (int(x) for x in row[:7])
    name = OPCODE_NAMES[op]
    if op in (LDS, LDG):
        return f"{name}.{imm2} R{dst}, [R{a} + {imm:#x}]"
    if op == STS:
        return f"{name}.{imm2} [R{a} + {imm:#x}], R{b}"
    if op == S2R:
        return f"S2R R{dst}, SR_TID.X"
    if op == LOP3:
        return f"LOP3.LUT R{dst}, {_operand(a, imm)}, {_operand(b, imm)}, {_operand(c, imm)}, {imm2:#04x}"
    if op == SHF:
        variant = ("R.U32.HI", "R.U32", "L.U32", "L.U32.HI")[imm2]
        return f"SHF.{variant} R{dst}, {_operand(a, imm)}, {_operand(b, imm)}, {_operand(c, imm)}"
    operands = [_operand(x, imm) for x in (a, b, c)]
    arity = {MOV: 1, SHR: 2, SHL: 2, IMUL: 2, IMAD: 3, IADD: 3, PRMT: 3}[op]
    return f"{name} R{dst}, " + ", ".join(operands[:arity])


class ProgramBuilder:
    """Build a ``Program`` instruction by instruction, with named registers.

    Every emitting method returns the destination register index, so programs read like
    straight-line CUDA::

        b = ProgramBuilder("lqq")
        word = b.reg("word")
        lo = b.and_(word, LOW_NIBBLES)
    """

    def __init__(self, name: str):
        self.name = name
        self._rows: list[list[int]] = []
        self._names: dict[str, int] = {}
        self._n_regs = 0
        self.sections: dict[str, tuple[int, int]] = {}
        self.outputs: dict[str, list[int]] = {}
        self.inputs: dict[str, int] = {}
        self._open: tuple[str, int] | None = None

    # --- registers ----------------------------------------------------------------------
    def reg(self, name: str | None = None, count: int = 1) -> int:
        """Allocate ``count`` consecutive registers; return the first."""
        first = self._n_regs
        self._n_regs += count
        if name is not None:
            if name in self._names:
                raise ValueError(f"register name {name!r} is used twice in {self.name}")
            self._names[name] = first
        return first

    def param(self, name: str) -> int:
        """A register the caller sets before running (a kernel parameter)."""
        index = self.reg(name)
        self.inputs[name] = index
        return index

    # --- sections -----------------------------------------------------------------------
    def begin(self, section: str) -> None:
        """Start a named section (sections do not nest)."""
        if self._open is not None:
            raise ValueError(f"section {self._open[0]!r} is still open")
        self._open = (section, len(self._rows))

    def end(self) -> None:
        """Close the open section."""
        if self._open is None:
            raise ValueError("no section is open")
        name, start = self._open
        self.sections[name] = (start, len(self._rows))
        self._open = None

    # --- raw emission -------------------------------------------------------------------
    def emit(self, op, dst, a=RZ, b=RZ, c=RZ, imm=0, imm2=0, check=CHECK_NONE, check_sources=None):
        """Append one instruction; ``check_sources`` defaults to (a, b, c)."""
        if not 0 <= imm <= MASK32:
            raise ValueError(f"immediate {imm!r} does not fit in 32 bits")
        ca, cb, cc = check_sources if check_sources is not None else (a, b, c)
        self._rows.append([op, dst, a, b, c, imm, imm2, check, ca, cb, cc])
        return dst

    def _src(self, x) -> tuple[int, int]:
        """(operand index, immediate) for a register index or a Python int immediate."""
        if isinstance(x, Imm):
            return IMM, x.value
        return int(x), 0

    def _three(self, op, a, b, c, dst, imm2=0, check=CHECK_NONE):
        srcs = [self._src(x) for x in (a, b, c)]
        imms = {imm for index, imm in srcs if index == IMM}
        if len(imms) > 1:
            raise ValueError("an instruction holds at most one immediate")
        imm = imms.pop() if imms else 0
        dst = self.reg() if dst is None else dst
        return self.emit(op, dst, srcs[0][0], srcs[1][0], srcs[2][0], imm, imm2, check)

    # --- instructions -------------------------------------------------------------------
    def s2r_tid(self, dst=None):
        """DST = thread index (SR_TID.X)."""
        return self.emit(S2R, self.reg() if dst is None else dst)

    def mov(self, a, dst=None):
        """DST = A (register or ``Imm``)."""
        return self._three(MOV, a, Reg.ZERO, Reg.ZERO, dst)

    def lop3(self, a, b, c, lut, dst=None):
        """DST = LUT(A, B, C)."""
        return self._three(LOP3, a, b, c, dst, imm2=lut)

    def and_(self, a, b, dst=None):
        """DST = A & B (one LOP3, as ptxas emits it)."""
        return self.lop3(a, b, Reg.ZERO, LUT_AND, dst)

    def or_(self, a, b, dst=None):
        """DST = A | B (one LOP3)."""
        return self.lop3(a, b, Reg.ZERO, LUT_OR, dst)

    def xor(self, a, b, dst=None):
        """DST = A ^ B (one LOP3)."""
        return self.lop3(a, b, Reg.ZERO, LUT_XOR, dst)

    def shf(self, lo, shift, hi, variant, dst=None):
        """Funnel shift of {hi:lo} (SASS operand order: lo, shift, hi)."""
        return self._three(SHF, lo, shift, hi, dst, imm2=variant)

    def shr(self, a, shift, dst=None):
        """DST = A >> shift, as ptxas emits it: ``SHF.R.U32.HI dst, RZ, shift, A``."""
        return self.shf(Reg.ZERO, shift, a, SHF_R_HI, dst)

    def shl(self, a, shift, dst=None):
        """DST = A << shift, as ``SHF.L.U32 dst, A, shift, RZ``."""
        return self.shf(a, shift, Reg.ZERO, SHF_L_LO, dst)

    def shr_plain(self, a, shift, dst=None):
        """DST = A >> shift with the plain SHR opcode."""
        return self._three(SHR, a, shift, Reg.ZERO, dst)

    def shl_plain(self, a, shift, dst=None):
        """DST = A << shift with the plain SHL opcode."""
        return self._three(SHL, a, shift, Reg.ZERO, dst)

    def imad(self, a, b, c, dst=None, check=CHECK_NONE):
        """DST = A * B + C (mod 2^32)."""
        return self._three(IMAD, a, b, c, dst, check=check)

    def imul(self, a, b, dst=None, check=CHECK_NONE):
        """DST = A * B (mod 2^32)."""
        return self._three(IMUL, a, b, Reg.ZERO, dst, check=check)

    def iadd(self, a, b, c=None, dst=None, check=CHECK_NONE):
        """DST = A + B + C (mod 2^32), SASS IADD3."""
        return self._three(IADD, a, b, Reg.ZERO if c is None else c, dst, check=check)

    def prmt(self, a, selector, c=None, dst=None):
        """DST = byte permute of {C:A} by ``selector`` (SASS order: A, selector, C)."""
        return self._three(PRMT, a, selector, Reg.ZERO if c is None else c, dst)

    def lds(self, address, offset=0, width=32, dst=None):
        """Load ``width`` bits from shared memory at ``address + offset``; return the first
        destination register (``width // 32`` consecutive registers)."""
        return self._load(LDS, address, offset, width, dst)

    def ldg(self, address, offset=0, width=128, dst=None):
        """Load ``width`` bits from global memory (LDG.E.128 by default)."""
        return self._load(LDG, address, offset, width, dst)

    def _load(self, op, address, offset, width, dst):
        if width not in (32, 64, 128):
            raise ValueError(f"load width must be 32, 64 or 128 bits; got {width}")
        dst = self.reg(count=width // 32) if dst is None else dst
        return self.emit(op, dst, int(address), RZ, RZ, offset, width)

    def sts(self, address, source, offset=0, width=128):
        """Store ``width`` bits from registers ``source..`` to shared memory."""
        if width not in (32, 64, 128):
            raise ValueError(f"store width must be 32, 64 or 128 bits; got {width}")
        return self.emit(STS, -1, int(address), int(source), RZ, offset, width)

    def vadd4(self, a, b, dst=None):
        """QServe's per-byte add ``__vadd4(a, b)``, expanded to the 5 instructions ptxas emits
        for it on sm_90a (CUDA 13.0, read from ``cuobjdump -sass``)::

            t0 = a & 0x7F7F7F7F              LOP3 0xc0
            t1 = b & 0x7F7F7F7F              LOP3 0xc0
            t2 = 0x80808080 & (b ^ a)        LOP3 0x48   (bit 7 of each lane, carry-less)
            t3 = t0 + t1                     IADD3       (each lane <= 254: no lane carries)
            dst = t3 ^ t2                    LOP3 0x3c

        The IADD3 carries the byte-lane check: the tracing executor confirms that vadd4 never
        carries across lanes (each lane wraps modulo 256 on its own instead).
        """
        low7 = Imm(0x7F7F7F7F)
        t0 = self.and_(a, low7)
        t1 = self.and_(b, low7)
        t2 = self.lop3(b, Imm(0x80808080), a, LUT_B_AND_A_XOR_C)
        t3 = self.iadd(t0, t1, check=CHECK_ADD_U8)
        return self.xor(t3, t2, dst)

    # --- result ---------------------------------------------------------------------------
    def build(self) -> Program:
        """The finished ``Program``."""
        if self._open is not None:
            raise ValueError(f"section {self._open[0]!r} was not closed")
        code = np.array(self._rows, dtype=np.int64).reshape(-1, N_FIELDS)
        return Program(self.name, code, max(self._n_regs, 1), dict(self.sections),
                       dict(self.outputs), dict(self.inputs))


@dataclass(frozen=True)
class Imm:
    """An immediate operand (0 <= value < 2^32)."""

    value: int

    def __post_init__(self):
        if not 0 <= int(self.value) <= MASK32:
            raise ValueError(f"immediate {self.value!r} does not fit in 32 bits")


class Reg:
    """Named pseudo registers for builder calls."""

    ZERO = RZ
