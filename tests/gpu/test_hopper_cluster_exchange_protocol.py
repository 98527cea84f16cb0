"""A model checker for the cluster split's exchange in gpu/kernels/w4a8_hopper.cu (CPU only).

With split-K 2 and n <= 64 the two k-split CTAs of a tile run as one thread block cluster and add
their int32 partials through distributed shared memory (``ClusterExchange``): row block b is
finished by the CTA of rank b % 2, its owner; the other CTA's warpgroup sends its partials into
the owner's exchange buffer, which lies under the owner's epilogue staging tile. compute-sanitizer
racecheck never finishes the st.async form of this exchange (scripts/racecheck_probe.py), so this
module checks the protocol itself, in *every* interleaving of a small model of it:

    every thread of both CTAs            thread 0 first: mbarrier.init(exchange, 1) and, in a CTA
      __syncthreads, cluster_arrive        that owns a row block, arrive.expect_tx(slot bytes);
                                           fence.mbarrier_init
    a sender (the warpgroup of row block b in the CTA that does not own b)
      cluster_wait; st.async of each 16-byte chunk into the owner's slot, each completing its
      bytes on the owner's barrier when it lands; exit
    the owner's warpgroup
      wait for phase 0 of its barrier; each thread reads its chunks; (n = STAGED_STORES_N)
      the warpgroup's named barrier, then the staging tile's writes over the buffer; exit

and racecheck's build of it (gpu.hopper.BARRIER_EXCHANGE_DEFINE), whose mbarrier is never armed:
the sender stores its chunks with plain remote stores after cluster_wait and then arrives on the
cluster barrier again (release); the owner waits for phase 0 (unless it sent first), arrives,
and waits for phase 1 (acquire) before its reads. A cluster barrier phase completes once every
thread that has not exited has arrived; no thread may arrive again before it has waited.

for the LiquidGEMM kernel (two compute warpgroups, one row block each) and the ExCP ablation
(one MMA warpgroup holds both row blocks: it sends the partner's, then finishes its own), on full
tiles and on an edge tile with one row block. Stores land at any later moment. In every
interleaving no thread may read a chunk that has not landed or that the staging tile has
overwritten, no store may land in a CTA that has exited, on the staging tile, on a chunk already
written or on a barrier not yet initialized, and nothing may deadlock.

The model is written from the kernel's code, so it checks the protocol, not the compiled kernel
(the GPU property tests and tests/gpu/test_hopper_mutants.py catch wrong bytes). Deliberately
wrong protocols (MUTANTS) show that the checker finds each kind of fault.
"""

from __future__ import annotations

import itertools

import pytest

from liquidref.tiling import CLUSTER_SPLIT_K_MAX

from .model_checking import Violation, violations
SPLIT_K = CLUSTER_SPLIT_K_MAX  # the ranks of a cluster (the kernel's is tested to match)
assert SPLIT_K == 2, "the model's roles (one slot, ExCP's partner 1 - rank) are those of a cluster of two"
THREADS = 2  # threads modelled per warpgroup (each stands for its share of the 128)
CHUNKS = 2  # 16-byte chunks per thread (the kernel's BN / 8)

ST_ASYNC, BY_CLUSTER_BARRIER = "st_async", "cluster_barrier"  # the two builds of the exchange
BUILDS = (ST_ASYNC, BY_CLUSTER_BARRIER)

# Deliberately wrong protocols: the builds each applies to and the violation the checker must
# report for it.
MUTANTS = {
    # the sender does not wait for the cluster barrier: its bytes may reach the owner's barrier
    # before thread 0 there has initialized it (racecheck build: it arrives on phase 1 unwaited)
    "send_before_cluster_wait": {ST_ASYNC: "uninitialized barrier", BY_CLUSTER_BARRIER: "before waiting"},
    # the owner reads its buffer without waiting for the barrier (racecheck build: for phase 1)
    "read_without_wait": {ST_ASYNC: "before it landed", BY_CLUSTER_BARRIER: "before it landed"},
    # the owner's expect_tx is one chunk short: the phase completes with a chunk still in flight
    "expect_one_chunk_short": {ST_ASYNC: "before it landed"},
    # the owner's warpgroup writes its staging tile without the named barrier after the reads
    "staging_without_barrier": {ST_ASYNC: "overwrote", BY_CLUSTER_BARRIER: "overwrote"},
    # every row block owned by rank 0: both of rank 1's warpgroups send into the one slot
    "owner_always_rank_0": {ST_ASYNC: "two stores into one chunk", BY_CLUSTER_BARRIER: "two stores into one chunk"},
    # thread 0 never arrives on the owner's barrier (no arrive.expect_tx): its phase never completes
    "owner_never_arrives": {ST_ASYNC: "deadlock"},
    # (racecheck build) the sender arrives on phase 1 before its stores: the owner may read first
    "arrive_before_stores": {BY_CLUSTER_BARRIER: "before it landed"},
    # (racecheck build) the owner arrives on phase 1 without waiting for phase 0
    "owner_skips_phase_0_wait": {BY_CLUSTER_BARRIER: "before waiting"},
    # (racecheck build) the owner never arrives on phase 1: the senders' phase never completes
    "owner_skips_phase_1_arrive": {BY_CLUSTER_BARRIER: "deadlock"},
}


def owner(row_block: int, mutant: str | None) -> int:
    """ClusterExchange::owner: the rank that finishes row block ``row_block``."""
    return 0 if mutant == "owner_always_rank_0" else row_block % SPLIT_K


def _programs(pipeline: str, active_blocks: int, staged: bool, build: str, mutant: str | None):
    """(cta, warpgroup) and the straight-line instruction list of every modelled thread."""
    slot_chunks = THREADS * CHUNKS
    by_barrier = build == BY_CLUSTER_BARRIER
    programs = []

    def send(rank, row_block, t):
        target = owner(row_block, mutant)
        ops = [] if mutant == "send_before_cluster_wait" else [("cluster_wait", 0)]
        chunks = [(target, t * CHUNKS + c) for c in range(CHUNKS)]  # the slot of the one other rank
        stores = [("store", target, chunk, by_barrier) for target, chunk in chunks]
        if not by_barrier:
            return ops + stores
        if mutant == "arrive_before_stores":
            return ops + [("cluster_arrive",)] + stores
        return ops + stores + [("cluster_arrive",)]  # arrive.release: after this thread's stores

    def receive(rank, wg, t, has_sent=False):
        if not by_barrier:
            ops = [] if mutant == "read_without_wait" else [("wait_barrier", rank)]
        else:
            ops = []
            if not has_sent:
                ops += [] if mutant == "owner_skips_phase_0_wait" else [("cluster_wait", 0)]
                ops += [] if mutant == "owner_skips_phase_1_arrive" else [("cluster_arrive",)]
            ops += [] if mutant == "read_without_wait" else [("cluster_wait", 1)]
        ops += [("read", rank, t * CHUNKS + c) for c in range(CHUNKS)]
        if staged:
            if mutant != "staging_without_barrier":
                ops += [("wg_arrive", rank, wg), ("wg_wait", rank, wg)]
            ops.append(("staging", rank))
        return ops

    for rank in range(SPLIT_K):
        owns = rank < active_blocks and mutant != "owner_never_arrives" and not by_barrier
        expect = slot_chunks * (SPLIT_K - 1) - (1 if mutant == "expect_one_chunk_short" else 0)
        start = [("sync_arrive", rank), ("sync_wait", rank), ("cluster_arrive",)]
        programs.append(((rank, "load"), [("init", rank, expect if owns else None)] + start))
        if pipeline == "liquidgemm":  # compute warpgroup cw holds row block cw
            for cw, t in itertools.product(range(2), range(THREADS)):
                ops = list(start)
                if cw < active_blocks:
                    ops += send(rank, cw, t) if owner(cw, mutant) != rank else receive(rank, cw, t)
                programs.append(((rank, cw), ops))
        else:  # ExCP: one MMA warpgroup holds both row blocks; rank z finishes row block z
            for t in range(THREADS):
                own, other = rank, 1 - rank
                ops = list(start)
                sends = other < active_blocks
                if sends:
                    ops += send(rank, other, t)
                if own < active_blocks:
                    ops += receive(rank, 0, t, has_sent=sends)
                programs.append(((rank, 0), ops))
    return programs


def explore(pipeline, active_blocks, staged, build, mutant=None):
    """Every interleaving of the model; returns the number of states, raises Violation."""
    roles, programs = zip(*_programs(pipeline, active_blocks, staged, build, mutant))
    threads_of_cta = [sum(1 for r in roles if r[0] == rank) for rank in range(SPLIT_K)]
    threads_of_wg = {r: roles.count(r) for r in roles}
    slot_chunks = THREADS * CHUNKS
    EMPTY, LANDED, STAGING = 0, 1, 2

    start = (
        (0,) * len(programs),  # program counters
        (None,) * SPLIT_K,  # exchange barrier per rank: None (not initialized) or (pending, bytes, phase)
        ((EMPTY,) * slot_chunks,) * SPLIT_K,  # each rank's exchange buffer
        frozenset(),  # stores in flight: (thread, target rank, chunk, plain store)
        (0,) * SPLIT_K,  # __syncthreads arrivals per rank
        frozenset(),  # named barrier arrivals: ((rank, warpgroup), count)
    )

    def complete(bars, rank, arrivals, nbytes):
        if bars[rank] is None:
            raise Violation(f"bytes or an arrival on rank {rank}'s uninitialized barrier")
        pending, tx, phase = bars[rank]
        pending, tx = pending - arrivals, tx + nbytes
        if pending < 0:
            raise Violation(f"an arrival on rank {rank}'s barrier whose phase has all its arrivals")
        if pending == 0 and tx == 0:
            pending, phase = 1, phase + 1
        return bars[:rank] + ((pending, tx, phase),) + bars[rank + 1:]

    # executed[kind][p][pc]: how many instructions of kind thread p has executed at counter pc
    executed = {kind: [list(itertools.accumulate((op[0] == kind for op in program), initial=0))
                       for program in programs]
                for kind in ("cluster_arrive", "cluster_wait")}

    def done_before(pcs, p, kind):
        """How many instructions of ``kind`` thread p has executed."""
        return executed[kind][p][pcs[p]]

    def cluster_phase_complete(pcs, phase):
        """Every thread of the cluster that has not exited has arrived on ``phase``."""
        return all(pcs[q] == len(programs[q]) or done_before(pcs, q, "cluster_arrive") > phase
                   for q in range(len(programs)))

    def exited(pcs, rank):
        return all(pcs[p] == len(programs[p]) for p in range(len(programs)) if roles[p][0] == rank)

    seen = {start}
    stack = [start]
    while stack:
        state = stack.pop()
        pcs, bars, buffers, flight, syncs, named = state
        successors = []
        # a store lands: its chunk is written and (st.async) its bytes complete on the barrier
        for store in flight:
            thread, target, chunk, plain_store = store
            if exited(pcs, target):
                raise Violation(f"a store lands in rank {target}, which has exited")
            if buffers[target][chunk] == STAGING:
                raise Violation(f"a store lands on rank {target}'s staging tile (chunk {chunk})")
            if buffers[target][chunk] == LANDED:
                raise Violation(f"two stores into one chunk (rank {target}, chunk {chunk})")
            buffer = buffers[target][:chunk] + (LANDED,) + buffers[target][chunk + 1:]
            new_bars = bars if plain_store else complete(bars, target, 0, -1)
            successors.append((pcs, new_bars, buffers[:target] + (buffer,) + buffers[target + 1:],
                               flight - {store}, syncs, named))
        # a thread executes its next instruction, if it may
        for p, program in enumerate(programs):
            if pcs[p] == len(program):
                continue
            op, nxt = program[pcs[p]], pcs[:p] + (pcs[p] + 1,) + pcs[p + 1:]
            kind, rank = op[0], roles[p][0]
            if kind == "init":
                new_bars = bars[:rank] + ((1, 0, 0),) + bars[rank + 1:]
                if op[2] is not None:
                    new_bars = complete(new_bars, rank, 1, op[2])
                successors.append((nxt, new_bars, buffers, flight, syncs, named))
            elif kind == "sync_arrive":
                successors.append((nxt, bars, buffers, flight, syncs[:rank] + (syncs[rank] + 1,) + syncs[rank + 1:],
                                   named))
            elif kind == "sync_wait":
                if syncs[rank] == threads_of_cta[rank]:
                    successors.append((nxt, bars, buffers, flight, syncs, named))
            elif kind == "cluster_arrive":  # release: this thread's stores are visible first
                phase = done_before(pcs, p, "cluster_arrive")
                if phase > done_before(pcs, p, "cluster_wait"):
                    raise Violation(f"thread {roles[p]} arrives on cluster barrier phase {phase} before waiting for "
                                    f"phase {phase - 1}")
                if not any(store[0] == p for store in flight):
                    successors.append((nxt, bars, buffers, flight, syncs, named))
            elif kind == "cluster_wait":  # acquire
                if cluster_phase_complete(pcs, op[1]):
                    successors.append((nxt, bars, buffers, flight, syncs, named))
            elif kind == "store":
                successors.append((nxt, bars, buffers, flight | {(p, op[1], op[2], op[3])}, syncs, named))
            elif kind == "wait_barrier":  # try_wait.parity 0, acquire at cluster scope
                if bars[rank] is not None and bars[rank][2] >= 1:
                    successors.append((nxt, bars, buffers, flight, syncs, named))
            elif kind == "read":
                chunk = buffers[rank][op[2]]
                if chunk == EMPTY:
                    raise Violation(f"rank {rank} reads chunk {op[2]} before it landed")
                if chunk == STAGING:
                    raise Violation(f"rank {rank} reads chunk {op[2]}, which the staging tile overwrote")
                successors.append((nxt, bars, buffers, flight, syncs, named))
            elif kind == "wg_arrive":
                counts = dict(named)
                counts[roles[p]] = counts.get(roles[p], 0) + 1
                successors.append((nxt, bars, buffers, flight, syncs, frozenset(counts.items())))
            elif kind == "wg_wait":
                if dict(named).get(roles[p], 0) == threads_of_wg[roles[p]]:
                    successors.append((nxt, bars, buffers, flight, syncs, named))
            elif kind == "staging":  # this thread's staging writes may cover any chunk of the buffer
                if any(store[1] == rank for store in flight):
                    raise Violation(f"rank {rank} writes its staging tile while a store into it is in flight")
                staged_buffer = (STAGING,) * slot_chunks
                successors.append((nxt, bars, buffers[:rank] + (staged_buffer,) + buffers[rank + 1:], flight, syncs,
                                   named))
            else:
                raise AssertionError(f"unknown instruction {op}")
        if not successors:
            if not all(pc == len(program) for pc, program in zip(pcs, programs)):
                raise Violation(f"deadlock: program counters {pcs} of {[len(p) for p in programs]}")
        for successor in successors:
            if successor not in seen:
                seen.add(successor)
                stack.append(successor)
    return len(seen)


# (pipeline, active row blocks of the tile, staged stores (n = STAGED_STORES_N), build)
CONFIGS = list(itertools.product(("liquidgemm", "excp"), (2, 1), (True, False), BUILDS))


def _config_id(config):
    pipeline, blocks, staged, build = config
    return f"{pipeline}-{blocks}blocks-{'staged' if staged else 'direct'}-{build}"


@pytest.mark.parametrize("config", CONFIGS, ids=map(_config_id, CONFIGS))
def test_the_exchange_has_no_race_and_no_deadlock(config):
    assert explore(*config) > 1


@pytest.mark.mutant
@pytest.mark.parametrize(("mutant", "build"), [(m, b) for m in sorted(MUTANTS) for b in MUTANTS[m]])
def test_every_mutant_protocol_is_caught(mutant, build):
    configs = [c for c in CONFIGS if c[3] == build]
    caught = violations(explore, configs, mutant)
    assert any(MUTANTS[mutant][build] in message for message in caught), (mutant, caught)
