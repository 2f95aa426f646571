"""Benchmarks: ``python -m benchmarks NAME [--json]`` from the repository root.

Speed is always reported as ratios or rates measured in one process, with configurations
interleaved and medians of many runs: absolute timings on shared machines drift by up to 2x within
minutes. ``OMP_WAIT_POLICY=PASSIVE`` is set before torch can be imported (without it a parallel op
sometimes costs 8 ms while idle threads spin).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
