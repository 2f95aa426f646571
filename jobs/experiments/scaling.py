"""Scaling laws for iso-FLOP ladders: a size knob over a spec family, the compute-optimal point of
each budget, a saturating power law per architecture, and where two architectures' laws cross,
with its uncertainty.

The law is the one the scaling-law literature fits to the loss of compute-optimal models,
L(C) = E + A x C^-alpha (E the irreducible loss, C the training FLOPs). It is fitted by least
squares on L over a grid of E (for each E, log(L - E) is linear in log C), which needs nothing
beyond numpy and finds the global minimum of the grid. The uncertainty of a crossover comes from
a bootstrap over the fitted points (resampled with replacement, refitted, the crossover found
again): the median and the 5th and 95th percentiles, and how many resamples cross at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import numpy as np

from aunet.core.spec import Spec

#: Points of the E grid, between 0 and just under the lowest loss.
E_GRID = 400


@attrs.frozen
class PowerLaw:
    """L(C) = e + a x C^-alpha, fitted to ``points`` (compute, loss) pairs."""

    e: float
    a: float
    alpha: float
    residual: float  # root mean square of L - L(C) over the points

    def __call__(self, compute: float | np.ndarray) -> float | np.ndarray:
        return self.e + self.a * np.power(compute, -self.alpha)


def fit(compute: Sequence[float], loss: Sequence[float]) -> PowerLaw:
    """The saturating power law closest to the points in least squares (at least three points,
    compute positive)."""
    c = np.asarray(compute, dtype=np.float64)
    y = np.asarray(loss, dtype=np.float64)
    if len(c) < 3 or len(c) != len(y):
        raise ValueError(f"a power law needs at least three (compute, loss) points, got {len(c)}")
    if not (c > 0).all():
        raise ValueError("compute must be positive")
    x = np.log(c)
    e = np.linspace(0.0, y.min() * 0.999, E_GRID)[:, None]  # (G, 1)
    logs = np.log(y[None] - e)  # (G, N): for each E, log(L - E) is linear in log C
    dx = x - x.mean()
    slope = (logs * dx).sum(1) / (dx * dx).sum()  # (G,) least squares, all E at once
    intercept = logs.mean(1) - slope * x.mean()
    predicted = e + np.exp(intercept)[:, None] * np.power(c[None], slope[:, None])  # (G, N)
    residual = np.sqrt(np.mean((predicted - y[None]) ** 2, axis=1))
    residual[slope >= 0] = np.inf  # not a decreasing law
    best = int(np.argmin(residual))
    if not np.isfinite(residual[best]):
        raise ValueError("the loss does not fall with compute: no decreasing power law fits")
    return PowerLaw(float(e[best, 0]), float(math.exp(intercept[best])), float(-slope[best]), float(residual[best]))


def crossover(first: PowerLaw, second: PowerLaw, *, low: float = 1e10, high: float = 1e26) -> float | None:
    """The compute in [low, high] where ``first`` falls to ``second``'s loss (the first such, by
    bisection on log C over a fine grid), or None where they do not cross in the range."""
    grid = np.logspace(math.log10(low), math.log10(high), 2001)
    gap = first(grid) - second(grid)
    sign = np.sign(gap)
    changes = np.nonzero(sign[:-1] * sign[1:] < 0)[0]
    if len(changes) == 0:
        return None
    lo, hi = math.log(grid[changes[0]]), math.log(grid[changes[0] + 1])
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.sign(first(math.exp(mid)) - second(math.exp(mid))) == sign[changes[0]]:
            lo = mid
        else:
            hi = mid
    return math.exp((lo + hi) / 2)


@attrs.frozen
class Crossover:
    """Where two architectures' laws cross, and how sure that is."""

    compute: float | None  # from the fits to every point
    median: float | None  # over the bootstrap resamples that cross
    low: float | None  # 5th percentile
    high: float | None  # 95th percentile
    crossing: float  # the share of resamples that cross in the range at all
    resamples: int


def bootstrap_crossover(
    first: tuple[Sequence[float], Sequence[float]],
    second: tuple[Sequence[float], Sequence[float]],
    *,
    resamples: int = 500,
    seed: int = 0,
    low: float = 1e10,
    high: float = 1e26,
) -> Crossover:
    """The crossover of two architectures' (compute, loss) points, with a bootstrap: both point
    sets resampled with replacement (a resample with fewer distinct computes than the points have,
    up to three, is drawn again), refitted, crossed. With three points or fewer per side there is
    nothing to resample (every resample the law can fit is the same points), so no interval is
    given: ``resamples`` is 0."""
    rng = np.random.default_rng(seed)
    whole = crossover(fit(*first), fit(*second), low=low, high=high)
    if min(len(first[0]), len(second[0])) <= 3:
        return Crossover(whole, None, None, None, 0.0, 0)
    found: list[float] = []
    for _ in range(resamples):
        laws = []
        for compute, loss in (first, second):
            c, y = np.asarray(compute, dtype=np.float64), np.asarray(loss, dtype=np.float64)
            needed = min(3, len(np.unique(c)))  # two budgets may give the same compute (one step each)
            while True:
                pick = rng.integers(0, len(c), len(c))
                if len(np.unique(c[pick])) >= needed:
                    break
            try:
                laws.append(fit(c[pick], y[pick]))
            except ValueError:
                break
        if len(laws) == 2:
            point = crossover(laws[0], laws[1], low=low, high=high)
            if point is not None:
                found.append(point)
    if not found:
        return Crossover(whole, None, None, None, 0.0, resamples)
    logs = np.log(found)
    return Crossover(
        whole,
        float(np.exp(np.median(logs))),
        float(np.exp(np.percentile(logs, 5))),
        float(np.exp(np.percentile(logs, 95))),
        len(found) / resamples,
        resamples,
    )


def compute_optimal(runs: Sequence[tuple[float, float, str]]) -> dict[float, tuple[float, str]]:
    """Per budget, the lowest loss and the size that reached it, from (budget, loss, size) runs."""
    best: dict[float, tuple[float, str]] = {}
    for budget, loss, size in runs:
        if budget not in best or loss < best[budget][0]:
            best[budget] = (loss, size)
    return dict(sorted(best.items()))


def scaled(spec: Spec, factor: float) -> Spec:
    """``spec`` about ``factor`` times as large in non-embedding parameters: every level's width
    and every stage's layers times factor^(1/3) (widths rounded to the stage's head width, layers
    to whole layers, at least one), the paper's way of growing a family (width and depth
    together). Names the result ``<name>-x<factor>``."""
    if factor <= 0:
        raise ValueError(f"a size factor must be positive, got {factor}")
    step = factor ** (1 / 3)
    levels = []
    for level in spec.levels:
        stage = level.stage
        head = getattr(stage, "head_dim", None) or 1
        dim = max(head, round(level.dim * step / head) * head) if level.dim is not None else None
        changes = {}
        if stage is not None and hasattr(stage, "layers"):
            changes["layers"] = max(1, round(stage.layers * step))
        new_stage = attrs.evolve(stage, **changes) if changes else stage
        levels.append(attrs.evolve(level, dim=dim, stage=new_stage))
    return attrs.evolve(spec, name=f"{spec.name}-x{factor:g}", levels=tuple(levels))


__all__ = [
    "Crossover",
    "PowerLaw",
    "bootstrap_crossover",
    "compute_optimal",
    "crossover",
    "fit",
    "scaled",
]
