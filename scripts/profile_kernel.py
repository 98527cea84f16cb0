"""Run a few ``gpu.api.linear`` calls of one shape, for Nsight Compute (ncu) to profile.

The calls use random (never zero) weights and activations, so the profiled kernels read real
bytes. Run it under ncu on the GPU machine, skipping the warm-up launches, e.g.::

    ncu --set full --import-source yes --kernel-name regex:w4a8_hopper --launch-skip 2 \\
        --launch-count 1 -o o_m64 python scripts/profile_kernel.py --n 8192 --k 8192 --m 64
    ncu --import o_m64.ncu-rep --page source --csv --print-source sass > o_m64_sass.csv

``--calls`` linear calls are made per M (default 3), in the order given by ``--m``.
"""

from __future__ import annotations

import argparse

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8192, help="output features (rows of W)")
    parser.add_argument("--k", type=int, default=8192, help="input features")
    parser.add_argument("--m", default="64", help="comma-separated token counts, e.g. 64,1")
    parser.add_argument("--calls", type=int, default=3, help="linear calls per M")
    parser.add_argument("--backend", default="hopper")
    args = parser.parse_args(argv)

    import cupy as cp

    from gpu import api, bench

    device_weight = api.upload(bench.random_packed_weight(args.n, args.k, seed=1))
    rng = np.random.default_rng(0)
    for m in (int(v) for v in args.m.split(",")):
        X = cp.asarray(rng.standard_normal((m, args.k)).astype(np.float16))
        for _ in range(args.calls):
            api.linear(X, device_weight, backend=args.backend, check_finite=False)
    cp.cuda.Device().synchronize()
    print(f"profile_kernel: {args.calls} calls per M of {args.backend} at N={args.n} K={args.k} M={args.m}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
