"""The programs the emulator runs: the kernel's load and dequant paths, and their rivals.

Word programs (one packed 32-bit word ``P`` of 8 codes -> two registers of 4 weights each)::

    P = [c7 c6 c5 c4 c3 c2 c1 c0]   nibbles; byte i holds (low nibble, high nibble) = (row r, row r+8)

    lqq_dequant_program    LiquidQuant: lo = P & 0x0F0F0F0F, hi = (P >> 4) & 0x0F0F0F0F,
                           lo = lo * s + a*0x01010101 (IMAD), lo ^= 0x80808080 (LOP3); same for hi
    naive_dequant_program  the same without the rotation: IMAD with the two's-complement min byte
                           broadcast (mn & 0xFF) * 0x01010101 and no XOR
    qoq_dequant_program    QServe/QoQ: lo = P & 0x0F0F0F0F, hi = (P & 0xF0F0F0F0) >> 4,
                           lo = __vadd4(lo * s, zp) with zp = (-z*s) & 0xFF broadcast
    qoq_iadd_dequant_program  QoQ with a plain 32-bit IADD instead of __vadd4 (why QServe pays
                           for vadd4)

Block programs (one compute warpgroup, one 64 x 64 block = two wgmma k32 steps):

    dual_mma_block_program      Dual-MMA packed layout: 1 LDS.128 + 1 LDS.32 (metadata) per thread
    naive_layout_block_program  row-major nibbles (32 bytes per row): 8 LDS.32 per thread, each
                                word half used, 5 unpack instructions per register
    qserve_layout_block_program QServe's B-operand layout (32 x 32 blocks, mma.m16n8k32), one
                                warp per block: 1 LDS.128 + 2 LDS.32 (scales, zeros) per thread

and ``stage_copy_program``: the load path global -> shared with LDG.128 + STS.128 (the kernel uses a
bulk copy; this shows the layout makes the plain per-thread copy coalesced too).

Each word or block program marks its byte-lane arithmetic (``isa.CHECK_*``) so the tracing
executor can show where carries would cross a byte lane.
"""

from __future__ import annotations

from liquidref.constants import (
    BLOCK_BYTES,
    BYTES_PER_THREAD,
    LOW_NIBBLES,
    META_BYTES_PER_BLOCK,
    XOR_MASK_WORD,
)

from .isa import (
    CHECK_ADD_U8,
    CHECK_MAD_U8,
    LUT_A,
    LUT_B,
    LUT_C,
    RZ,
    SHF_R_HI,
    Imm,
    Program,
    ProgramBuilder,
)

HIGH_NIBBLES = LOW_NIBBLES << 4  # 0xF0F0F0F0
# PRMT selectors on the metadata word [s_r, a_r, s_r+8, a_r+8] with RZ as the second source:
# nibble 4 picks byte 0 of RZ (zero), nibble k < 4 picks byte k of the word.
SELECT_BYTE0 = 0x4440  # s of row r        -> a 32-bit integer
SELECT_BYTE2 = 0x4442  # s of row r + 8
BROADCAST_BYTE1 = 0x1111  # a of row r     -> a * 0x01010101
BROADCAST_BYTE3 = 0x3333  # a of row r + 8


# --- word programs ------------------------------------------------------------------------
def _word_inputs(b: ProgramBuilder, offset_name: str):
    word = b.param("P")
    s_lo, off_lo = b.param("s_lo"), b.param(f"{offset_name}_lo")
    s_hi, off_hi = b.param("s_hi"), b.param(f"{offset_name}_hi")
    return word, s_lo, off_lo, s_hi, off_hi


def _lqq_unpack(b: ProgramBuilder, word):
    """lo = P & 0x0F0F0F0F; hi = (P >> 4) & 0x0F0F0F0F (3 instructions, as ptxas emits)."""
    shifted = b.shr(word, Imm(4))
    lo = b.and_(word, Imm(LOW_NIBBLES))
    hi = b.and_(shifted, Imm(LOW_NIBBLES))
    return lo, hi


def _lqq_dequant(b: ProgramBuilder, codes, s, a_broadcast, rotate=True):
    """(codes * s + A) ^ 0x80808080: IMAD + LOP3 (without the XOR when ``rotate`` is False)."""
    u = b.imad(codes, s, a_broadcast, check=CHECK_MAD_U8)
    return b.xor(u, Imm(XOR_MASK_WORD)) if rotate else u


def _word_program(name, offset_name, body) -> Program:
    b = ProgramBuilder(name)
    word, s_lo, off_lo, s_hi, off_hi = _word_inputs(b, offset_name)
    lo, hi = body(b, word, s_lo, off_lo, s_hi, off_hi)
    b.outputs["weights"] = [lo, hi]
    return b.build()


def lqq_dequant_program(rotate: bool = True) -> Program:
    """LiquidQuant's unpack + dequant of one packed word: 7 instructions for 8 weights.

    Inputs: ``P`` (8 codes), ``s_lo``/``s_hi`` (steps of rows r, r+8), ``A_lo``/``A_hi``
    (``a * 0x01010101``). Outputs ``weights``: [lo, hi] registers of int8 weights.
    ``rotate=False`` drops the XOR (a mutant).
    """

    def body(b, word, s_lo, a_lo, s_hi, a_hi):
        b.begin("unpack")
        lo, hi = _lqq_unpack(b, word)
        b.end()
        b.begin("dequant")
        lo = _lqq_dequant(b, lo, s_lo, a_lo, rotate)
        hi = _lqq_dequant(b, hi, s_hi, a_hi, rotate)
        b.end()
        return lo, hi

    return _word_program("lqq" if rotate else "lqq-without-xor", "A", body)


def naive_dequant_program() -> Program:
    """The naive scheme: ``q4 * s + min`` on the register, adding the two's-complement min byte.

    Inputs: ``P``, ``s_lo``/``s_hi``, ``M_lo``/``M_hi`` (``(mn & 0xFF) * 0x01010101``).
    5 instructions for 8 weights, but a byte lane carries into the next whenever
    ``q4 * s + (mn & 0xFF) > 255``.
    """

    def body(b, word, s_lo, m_lo, s_hi, m_hi):
        b.begin("unpack")
        lo, hi = _lqq_unpack(b, word)
        b.end()
        b.begin("dequant")
        lo = _lqq_dequant(b, lo, s_lo, m_lo, rotate=False)
        hi = _lqq_dequant(b, hi, s_hi, m_hi, rotate=False)
        b.end()
        return lo, hi

    return _word_program("naive", "M", body)


def _qoq_unpack(b: ProgramBuilder, word):
    """QServe's unpack: lo = P & 0x0F0F0F0F; hi = (P & 0xF0F0F0F0) >> 4 (3 instructions)."""
    high = b.and_(word, Imm(HIGH_NIBBLES))
    lo = b.and_(word, Imm(LOW_NIBBLES))
    hi = b.shr(high, Imm(4))
    return lo, hi


def _qoq_dequant(b: ProgramBuilder, codes, s, zp_broadcast, use_vadd4=True):
    """QoQ: __vadd4(codes * s, zp) (IMUL + 5), or codes * s + zp with one IADD."""
    product = b.imul(codes, s, check=CHECK_MAD_U8)
    if use_vadd4:
        return b.vadd4(product, zp_broadcast)
    return b.iadd(product, zp_broadcast, check=CHECK_ADD_U8)


def qoq_dequant_program(use_vadd4: bool = True) -> Program:
    """QServe's per-group W4A8 dequant of one packed word (QoQ numbers).

    Inputs: ``P``, ``s_lo``/``s_hi`` (the group steps), ``Z_lo``/``Z_hi`` (the scaled zero
    point ``(-z * s) & 0xFF`` broadcast to 4 bytes). Output bytes are ``(q4 - z) * s`` modulo 256
    per lane: a value outside [-128, 127] wraps inside its lane (no carry crosses lanes; the
    weight is wrong all the same).
    ``use_vadd4=False`` uses one 32-bit IADD: then lanes carry into each other (``CHECK_ADD_U8``).
    """

    def body(b, word, s_lo, z_lo, s_hi, z_hi):
        b.begin("unpack")
        lo, hi = _qoq_unpack(b, word)
        b.end()
        b.begin("dequant")
        lo = _qoq_dequant(b, lo, s_lo, z_lo, use_vadd4)
        hi = _qoq_dequant(b, hi, s_hi, z_hi, use_vadd4)
        b.end()
        return lo, hi

    return _word_program("qoq" if use_vadd4 else "qoq-iadd", "Z", body)


# --- block programs ------------------------------------------------------------------------
def _metadata(b: ProgramBuilder, meta_address):
    """One LDS.32 of [s_r, a_r, s_r+8, a_r+8], then 4 PRMTs: s_lo, A_lo, s_hi, A_hi."""
    b.begin("metadata")
    meta = b.lds(meta_address, width=32)
    s_lo = b.prmt(meta, Imm(SELECT_BYTE0))
    a_lo = b.prmt(meta, Imm(BROADCAST_BYTE1))
    s_hi = b.prmt(meta, Imm(SELECT_BYTE2))
    a_hi = b.prmt(meta, Imm(BROADCAST_BYTE3))
    b.end()
    return s_lo, a_lo, s_hi, a_hi


def dual_mma_block_program(rotate: bool = True) -> Program:
    """A compute warpgroup's load + dequant of one 64 x 64 block in the Dual-MMA layout.

    Runs on 128 lanes per warpgroup (256 for two: thread ``tid`` reads block ``tid // 128``).
    Inputs: ``codes_base`` (shared byte address of warpgroup 0's 2048-byte block; warpgroup w's
    follows at ``+ 2048 w``) and ``meta_base`` (its 128 metadata bytes; ``+ 128 w``).
    Output ``frag``: 8 registers, ``frag[4 j + reg]`` = A-fragment register ``reg`` of k32 step
    ``j``, whose bytes are int8 weights (see ``emulator.fragments``).

    Per thread: prologue (addresses, once per kernel), metadata (LDS.32 + 4 PRMT per block),
    load (one LDS.128), unpack (12) and dequant (16).
    """
    b = ProgramBuilder("dual-mma" if rotate else "dual-mma-without-xor")
    codes_base = b.param("codes_base")
    meta_base = b.param("meta_base")
    b.begin("prologue")
    tid = b.s2r_tid()
    group = b.shr(tid, Imm(7))  # which warpgroup
    thread = b.and_(tid, Imm(127))  # t: thread in the warpgroup
    code_address = b.imad(group, Imm(BLOCK_BYTES), codes_base)
    code_address = b.imad(thread, Imm(BYTES_PER_THREAD), code_address)
    meta_address = b.imad(group, Imm(META_BYTES_PER_BLOCK), meta_base)
    quad = b.and_(thread, Imm(0xFFFFFFFC))  # 4 * (t // 4): the quad's metadata word
    meta_address = b.iadd(meta_address, quad)
    b.end()
    s_lo, a_lo, s_hi, a_hi = _metadata(b, meta_address)
    b.begin("load")
    packed = b.lds(code_address, width=128)  # P0..P3
    b.end()
    frag = [0] * 8
    unpacked = []
    b.begin("unpack")
    for p in range(4):
        unpacked.append(_lqq_unpack(b, packed + p))
    b.end()
    b.begin("dequant")
    for p, (lo, hi) in enumerate(unpacked):
        step, reg = p // 2, 2 * (p % 2)
        frag[4 * step + reg] = _lqq_dequant(b, lo, s_lo, a_lo, rotate)  # row r
        frag[4 * step + reg + 1] = _lqq_dequant(b, hi, s_hi, a_hi, rotate)  # row r + 8
    b.end()
    b.outputs["frag"] = frag
    return b.build()


NAIVE_ROW_BYTES = 32  # a 64-k row of 4-bit codes, row-major, low nibble = even k


def naive_layout_block_program() -> Program:
    """The same block stored row-major (``byte = 32 r + c // 2``, low nibble = even c), read with
    one LDS.32 per A-fragment register (the word holds 8 codes; the thread needs 4 of them).

    Same inputs and output ``frag`` as ``dual_mma_block_program`` (one warpgroup, 128 lanes;
    ``codes_base`` is the block's row 0). Per register: LDS.32, then 5 instructions to move the
    thread's 4 nibbles into 4 bytes::

        x = word >> (16 * (lane & 1))          4 codes in bits 0..15: n3 n2 n1 n0
        y = PRMT(x, 0x1100)                    bytes [n1n0, n1n0, n3n2, n3n2]
        t = (y >> 4) & 0x0F000F00              n1 in byte 1, n3 in byte 3
        codes = (y & 0x000F000F) | t           [n0, n1, n2, n3]
    """
    b = ProgramBuilder("naive-layout")
    codes_base = b.param("codes_base")
    meta_base = b.param("meta_base")
    b.begin("prologue")
    tid = b.s2r_tid()
    warp = b.shr(tid, Imm(5))
    lane = b.and_(tid, Imm(31))
    group_row = b.shr(lane, Imm(2))  # lane // 4
    row = b.imad(warp, Imm(16), group_row)  # 16 * warp + lane // 4
    address = b.imad(row, Imm(NAIVE_ROW_BYTES), codes_base)
    word_in_k8 = b.and_(lane, Imm(2))  # 2 * ((lane % 4) // 2): which 4-byte word of 8 k-bytes
    address = b.imad(word_in_k8, Imm(2), address)  # + 4 * ((lane % 4) // 2)
    half = b.and_(lane, Imm(1))
    shift = b.shl(half, Imm(4))  # 16 * (lane & 1)
    meta_address = b.and_(tid, Imm(0xFFFFFFFC))
    meta_address = b.iadd(meta_address, meta_base)
    b.end()
    s_lo, a_lo, s_hi, a_hi = _metadata(b, meta_address)
    words = {}
    b.begin("load")
    for step in range(2):
        for reg in range(4):
            # row + 8 (reg & 1), k0 = 4 (lane % 4) + 16 (reg >> 1) + 32 step
            offset = NAIVE_ROW_BYTES * 8 * (reg & 1) + 8 * (reg >> 1) + 16 * step
            words[step, reg] = b.lds(address, offset=offset, width=32)
    b.end()
    codes = {}
    b.begin("unpack")
    for key, word in words.items():
        x = b.shf(RZ, shift, word, SHF_R_HI)  # word >> shift (a per-lane shift)
        y = b.prmt(x, Imm(0x1100))
        t = b.shr(y, Imm(4))
        t = b.and_(t, Imm(0x0F000F00))
        codes[key] = b.lop3(y, Imm(0x000F000F), t, (LUT_A & LUT_B) | LUT_C)  # (y & m) | t
    b.end()
    frag = [0] * 8
    b.begin("dequant")
    for (step, reg), c in codes.items():
        s, a = (s_lo, a_lo) if reg % 2 == 0 else (s_hi, a_hi)
        frag[4 * step + reg] = _lqq_dequant(b, c, s, a)
    b.end()
    b.outputs["frag"] = frag
    return b.build()


QSERVE_BLOCK_BYTES = 512  # 32 channels x 32 k of 4-bit codes
QSERVE_META_BYTES = 32  # one byte per channel (scales; zeros likewise)


def qserve_layout_block_program() -> Program:
    """QServe's weight path (``share_to_reg_one_stage_B`` of its per-group W4A8 kernel).

    Warp ``w`` of the executed group reads 32 x 32 block ``w``: lane ``l`` (g = l // 4, t = l % 4)
    loads 16 bytes at ``codes_base + 512 w + 16 l`` (one LDS.128) and the 4-byte scale and zero
    words at ``+ 32 w + 4 g`` (two LDS.32; bytes = channels g, g+8, g+16, g+24). Output ``frag``:
    8 registers, ``frag[2 i + h]`` = channel ``g + 8 i``, k ``16 h + 4 t + byte`` (the mma.m16n8k32
    B fragments of 4 n8 tiles). Inputs ``codes_base``, ``scales_base``, ``zeros_base``.
    """
    b = ProgramBuilder("qserve-layout")
    codes_base = b.param("codes_base")
    scales_base = b.param("scales_base")
    zeros_base = b.param("zeros_base")
    b.begin("prologue")
    tid = b.s2r_tid()
    warp = b.shr(tid, Imm(5))
    code_address = b.imad(tid, Imm(16), codes_base)  # 512 w + 16 l = 16 tid
    meta_offset = b.and_(tid, Imm(31 & ~3))  # 4 g
    meta_offset = b.imad(warp, Imm(QSERVE_META_BYTES), meta_offset)
    scale_address = b.iadd(meta_offset, scales_base)
    zero_address = b.iadd(meta_offset, zeros_base)
    b.end()
    b.begin("metadata")
    scales = b.lds(scale_address, width=32)
    zeros = b.lds(zero_address, width=32)
    s = [b.and_(scales, Imm(0xFF))]
    for i in (1, 2):
        s.append(b.and_(b.shr(scales, Imm(8 * i)), Imm(0xFF)))
    s.append(b.shr(scales, Imm(24)))
    zp = [b.prmt(zeros, Imm(0x1111 * i)) for i in range(4)]
    b.end()
    b.begin("load")
    packed = b.lds(code_address, width=128)  # x y z w
    b.end()
    b.begin("unpack")
    x, y, z, w = (_qoq_unpack(b, packed + i) for i in range(4))
    b.end()
    # loaded_0 = x.lo (ch g, h 0), loaded_1 = z.lo (ch g, h 1), loaded_2 = y.lo (g+8, h 0),
    # loaded_3 = w.lo, loaded_4 = x.hi (g+16), loaded_5 = z.hi, loaded_6 = y.hi (g+24), loaded_7 = w.hi
    loaded = [x[0], z[0], y[0], w[0], x[1], z[1], y[1], w[1]]
    b.begin("dequant")
    frag = [_qoq_dequant(b, loaded[k], s[k // 2], zp[k // 2]) for k in range(8)]
    b.end()
    b.outputs["frag"] = frag
    return b.build()


def stage_copy_program() -> Program:
    """The load path of one stage: each thread copies 16 bytes global -> shared (LDG.128 +
    STS.128). Inputs ``src`` (global byte address of thread 0's 16 bytes) and ``dst``."""
    b = ProgramBuilder("stage-copy")
    src = b.param("src")
    dst = b.param("dst")
    b.begin("prologue")
    tid = b.s2r_tid()
    src_address = b.imad(tid, Imm(BYTES_PER_THREAD), src)
    dst_address = b.imad(tid, Imm(BYTES_PER_THREAD), dst)
    b.end()
    b.begin("load")
    data = b.ldg(src_address, width=128)
    b.sts(dst_address, data, width=128)
    b.end()
    return b.build()
