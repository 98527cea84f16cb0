"""A model checker for the stage-ring protocol of gpu/kernels/w4a8_hopper.cu (CPU only).

compute-sanitizer's racecheck cannot judge the stage ring: it does not see the TMA tensor copies'
writes at all (and reported a hazard for a correct and a racy ring alike when the kernel used
raw bulk copies; tests/gpu/test_hopper.py, scripts/racecheck_probe.py). This module checks the
protocol itself: it models the LiquidGEMM kernel's load warps, compute warpgroups, mbarriers
(arrival count, transaction bytes, phase parity), TMA copies that land at any later moment and wgmma groups that complete in order at any later
moment, and explores *every* interleaving of them for small rings. In each one, every read must
see the bytes of its own stage, no copy may land in a slot whose activations an unfinished wgmma
still reads, and nothing may deadlock.

What is modelled, per stage `it` of a CTA with ring slot s = it % S (the kernel's names):

    load warps (split, n >= 64)            one load warp (n < 64)
      warp 0: weights(it) for it < P         weights(it) for it < P
              bar.sync with warp 1           then for each it: weights(it) if it >= P,
              weights(it) for it >= P                           activations(it)
      warp 1: activations(it), and after     (activations complete on full_w; weights'
              stage P - 1 bar.arrive           expect_tx counts both halves)
    weights(it):     it >= S: wait empty_w[s] (parity ((it / S) - 1) & 1); arrive.expect_tx
                     full_w[s]; TMA copy codes + metadata -> slot s
    activations(it): it >= S: wait empty_x[s]; arrive.expect_tx full_x[s]; TMA copy X -> slot s
    compute WG:      wait full_w[s] (parity (it / S) & 1); LDS the weights; (split) wait
                     full_x[s]; issue the wgmma group (reads X of slot s until it completes);
                     wgmma wait_group 1; it > 0: every warp arrives on empty_w and (split)
                     empty_x of slot (it - 1) % S.

The model is written from the kernel's code, so it checks the protocol, not the compiled kernel:
a difference between the two is not caught here (the GPU property tests catch wrong bytes).
Deliberately wrong protocols (MUTANTS) show that the checker finds races and deadlocks.
"""

from __future__ import annotations

import itertools

import pytest

from liquidref.constants import THREADS_PER_WARPGROUP

from .model_checking import Violation, violations

WARPS_PER_WARPGROUP = THREADS_PER_WARPGROUP // 32  # each compute warp arrives on the empty barriers
WEIGHT_BYTES, ACTIVATION_BYTES = 3, 5  # any two distinct positive sizes

# Deliberately wrong protocols and the violation the checker must report for each.
MUTANTS = {
    # frees slot s of stage it right after issuing its wgmmas (the kernel frees stage it - 1
    # once wait_group 1 has retired it): the next copy lands under the running wgmma
    "release_current_stage": "land in slot",
    # the load warps wait for the wrong phase of the empty barrier: they refill a slot at once
    # and arrive on its full barrier again while the previous copy is still outstanding
    "empty_parity_off_by_one": "arrival on a barrier",
    # the empty barriers expect one arrival although every warp of every warpgroup arrives: the
    # phases run ahead of the stages and the pipeline stalls
    "empty_count_one": "deadlock",
    # (split loaders) the compute warpgroups do not wait for full_x before their wgmmas
    "skip_full_x_wait": "reads activations of stage",
}


def _programs(stages, n_stages, warpgroups, split, prefetch, mutant):
    """Straight-line instruction lists of every thread group, built as the kernel's loops run."""
    S, P = stages, min(n_stages, prefetch, stages)

    def empty_parity(it):  # the phase of slot it % S's empty barrier that frees it for stage it
        return (it // S) & 1 if mutant == "empty_parity_off_by_one" else ((it // S) - 1) & 1

    def weights(it):
        s = it % S
        ops = []
        if it >= S:
            ops.append(("wait", "empty_w", s, empty_parity(it)))
        ops.append(("expect", "full_w", s, WEIGHT_BYTES + (0 if split else ACTIVATION_BYTES)))
        ops.append(("copy", "w", s, it, "full_w", WEIGHT_BYTES))
        return ops

    def activations(it):
        s = it % S
        if not split:
            return [("copy", "x", s, it, "full_w", ACTIVATION_BYTES)]
        ops = []
        if it >= S:
            ops.append(("wait", "empty_x", s, empty_parity(it)))
        ops.append(("expect", "full_x", s, ACTIVATION_BYTES))
        ops.append(("copy", "x", s, it, "full_x", ACTIVATION_BYTES))
        return ops

    loaders = []
    if split:
        warp0 = [op for it in range(P) for op in weights(it)] + [("loaders_sync",)]
        warp0 += [op for it in range(P, n_stages) for op in weights(it)]
        warp1 = []
        for it in range(n_stages):
            warp1 += activations(it)
            if it + 1 == max(P, 1):
                warp1.append(("loaders_arrive",))
        loaders = [warp0, warp1]
    else:
        warp0 = [op for it in range(P) for op in weights(it)]
        for it in range(n_stages):
            warp0 += (weights(it) if it >= P else []) + activations(it)
        loaders = [warp0]

    consumers = []
    for wg in range(warpgroups):
        ops = []
        for it in range(n_stages):
            s = it % S
            ops += [("wait", "full_w", s, (it // S) & 1), ("read_w", s, it)]
            if split and mutant != "skip_full_x_wait":
                ops.append(("wait", "full_x", s, (it // S) & 1))
            ops.append(("wgmma", wg, s, it))
            halves = ("empty_w", "empty_x") if split else ("empty_w",)
            if mutant == "release_current_stage":
                ops += [("arrive", half, s) for _ in range(WARPS_PER_WARPGROUP) for half in halves]
                ops.append(("wgmma_wait", wg, 1))
                continue
            ops.append(("wgmma_wait", wg, 1))
            if it > 0:  # lane 0 of each warp, after its __syncwarp
                ops += [("arrive", half, (it - 1) % S) for _ in range(WARPS_PER_WARPGROUP) for half in halves]
        ops.append(("wgmma_wait", wg, 0))
        consumers.append(ops)
    return loaders + consumers


def explore(stages, n_stages, warpgroups, split, prefetch, mutant=None):
    """Every interleaving of the model; returns the number of states, raises Violation."""
    programs = _programs(stages, n_stages, warpgroups, split, prefetch, mutant)
    empty_count = 1 if mutant == "empty_count_one" else WARPS_PER_WARPGROUP * warpgroups
    counts = {"full_w": 1, "full_x": 1, "empty_w": empty_count, "empty_x": empty_count}
    names = sorted(counts)
    # barrier state per (name, slot): (pending arrivals, transaction bytes, completed phases)
    barriers0 = tuple((counts[n], 0, 0) for n in names for _ in range(stages))

    def index(name, s):
        return names.index(name) * stages + s

    def arrive(barriers, i, arrivals=1, tx=0):
        pending, bytes_, phase = barriers[i]
        pending, bytes_ = pending - arrivals, bytes_ + tx
        if pending < 0:
            raise Violation(f"an arrival on a barrier whose phase has all its arrivals ({names[i // stages]})")
        if pending == 0 and bytes_ == 0:
            pending, phase = counts[names[i // stages]], phase + 1
        return barriers[:i] + ((pending, bytes_, phase),) + barriers[i + 1:]

    start = (
        (0,) * len(programs),  # program counters
        barriers0,
        (-1,) * stages,  # stage whose weights slot s holds
        (-1,) * stages,  # stage whose activations slot s holds
        frozenset(),  # copies in flight: (half, slot, stage, barrier index, bytes)
        ((),) * warpgroups,  # wgmma groups in flight per warpgroup: (slot, stage), oldest first
        0,  # loaders' named barrier arrivals
    )
    seen = {start}
    stack = [start]
    while stack:
        pcs, barriers, data_w, data_x, copies, groups, loader_arrivals = stack.pop()
        successors = []
        # a copy lands
        for copy in copies:
            half, s, it, bar, bytes_ = copy
            if half == "x" and any(slot == s for g in groups for slot, _ in g):
                raise Violation(f"stage {it}'s activations land in slot {s} under a running wgmma")
            new_w = data_w[:s] + (it,) + data_w[s + 1:] if half == "w" else data_w
            new_x = data_x[:s] + (it,) + data_x[s + 1:] if half == "x" else data_x
            successors.append((pcs, arrive(barriers, bar, 0, -bytes_), new_w, new_x, copies - {copy}, groups,
                               loader_arrivals))
        # the oldest wgmma group of a warpgroup completes
        for wg, g in enumerate(groups):
            if g:
                successors.append((pcs, barriers, data_w, data_x, copies,
                                   groups[:wg] + (g[1:],) + groups[wg + 1:], loader_arrivals))
        # a thread group executes its next instruction, if it may
        for p, program in enumerate(programs):
            if pcs[p] == len(program):
                continue
            op, nxt = program[pcs[p]], pcs[:p] + (pcs[p] + 1,) + pcs[p + 1:]
            kind = op[0]
            if kind == "wait":
                if barriers[index(op[1], op[2])][2] % 2 != op[3]:  # try_wait.parity: that phase is done
                    successors.append((nxt, barriers, data_w, data_x, copies, groups, loader_arrivals))
            elif kind == "expect":
                successors.append((nxt, arrive(barriers, index(op[1], op[2]), 1, op[3]), data_w, data_x, copies,
                                   groups, loader_arrivals))
            elif kind == "copy":
                _, half, s, it, bar_name, bytes_ = op
                successors.append((nxt, barriers, data_w, data_x,
                                   copies | {(half, s, it, index(bar_name, s), bytes_)}, groups, loader_arrivals))
            elif kind == "read_w":
                if data_w[op[1]] != op[2]:
                    raise Violation(f"stage {op[2]} reads weights of stage {data_w[op[1]]} in slot {op[1]}")
                successors.append((nxt, barriers, data_w, data_x, copies, groups, loader_arrivals))
            elif kind == "wgmma":
                _, wg, s, it = op
                if data_x[s] != it:
                    raise Violation(f"stage {it}'s wgmma reads activations of stage {data_x[s]} in slot {s}")
                successors.append((nxt, barriers, data_w, data_x, copies,
                                   groups[:wg] + (groups[wg] + ((s, it),),) + groups[wg + 1:], loader_arrivals))
            elif kind == "wgmma_wait":
                if len(groups[op[1]]) <= op[2]:
                    successors.append((nxt, barriers, data_w, data_x, copies, groups, loader_arrivals))
            elif kind == "arrive":
                successors.append((nxt, arrive(barriers, index(op[1], op[2])), data_w, data_x, copies, groups,
                                   loader_arrivals))
            elif kind == "loaders_arrive":
                successors.append((nxt, barriers, data_w, data_x, copies, groups, loader_arrivals + 1))
            elif kind == "loaders_sync" and loader_arrivals:
                successors.append((nxt, barriers, data_w, data_x, copies, groups, loader_arrivals))
        if not successors:
            done = all(pc == len(program) for pc, program in zip(pcs, programs))
            if not (done and not copies and not any(groups)):
                raise Violation(f"deadlock: program counters {pcs} of {[len(p) for p in programs]}")
        for state in successors:
            if state not in seen:
                seen.add(state)
                stack.append(state)
    return len(seen)


CONFIGS = [
    # (ring stages, stages of the CTA, compute warpgroups, split loaders, prefetched weight
    # stages): rings that wrap once and twice, prefetch none, some and the whole ring (~3 s)
    (stages, n_stages, warpgroups, split, prefetch)
    for stages, n_stages in ((2, 5), (3, 4), (3, 7))
    for warpgroups, split, prefetch in itertools.product((1, 2), (False, True), (0, 2, 3))
    if not (prefetch == 3 and stages == 2)
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "S{}-n{}-wg{}-{}-pf{}".format(
    c[0], c[1], c[2], "split" if c[3] else "one", c[4]))
def test_the_ring_protocol_has_no_race_and_no_deadlock(config):
    assert explore(*config) > 1


@pytest.mark.mutant
@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_every_mutant_protocol_is_caught(mutant):
    configs = [c for c in CONFIGS if c[3] or mutant != "skip_full_x_wait"]
    caught = violations(explore, configs, mutant)
    assert any(MUTANTS[mutant] in message for message in caught), (mutant, caught)
