"""Scaling-law fits for iso-FLOP ladders (``aunet.jobs.experiments.scaling``): a known law is
recovered from its points, two known laws cross where they do, the bootstrap's interval holds the
true crossover under noise, and the size knob grows a spec family by about the factor asked."""

from __future__ import annotations

import math

import numpy as np
import pytest

import aunet
from aunet.core.accounting import account
from aunet.jobs.experiments import scaling as s

COMPUTE = np.logspace(13, 16, 7)


def law(e: float, a: float, alpha: float) -> s.PowerLaw:
    return s.PowerLaw(e, a, alpha, 0.0)


def test_a_known_law_is_recovered_from_its_points() -> None:
    truth = law(1.1, 900.0, 0.2)
    got = s.fit(COMPUTE, truth(COMPUTE))
    assert got.residual < 1e-3
    assert abs(got.e - 1.1) < 0.02 and abs(got.alpha - 0.2) / 0.2 < 0.05, got
    for c in (1e14, 1e18):  # within the points, and extrapolated
        assert abs(got(c) - truth(c)) / truth(c) < 0.01


def test_two_laws_cross_where_they_do() -> None:
    steep, shallow = law(1.0, 2000.0, 0.25), law(1.3, 60.0, 0.12)
    point = s.crossover(shallow, steep)  # the steep law starts higher and ends lower
    assert point is not None and abs(shallow(point) - steep(point)) < 1e-9
    assert s.crossover(law(1.0, 10.0, 0.1), law(1.5, 10.0, 0.1)) is None  # parallel: never


def test_the_bootstrap_interval_holds_the_true_crossover() -> None:
    rng = np.random.default_rng(1)
    steep, shallow = law(1.0, 2000.0, 0.25), law(1.3, 60.0, 0.12)
    truth = s.crossover(shallow, steep)
    noisy = [(COMPUTE, f(COMPUTE) * (1 + 0.003 * rng.standard_normal(len(COMPUTE)))) for f in (shallow, steep)]
    found = s.bootstrap_crossover(noisy[0], noisy[1], resamples=200)
    assert found.crossing > 0.5 and found.low <= truth <= found.high, (truth, found)
    assert math.log10(found.high / found.low) < 4


def test_bad_points_are_refused() -> None:
    with pytest.raises(ValueError, match="at least three"):
        s.fit([1e13, 1e14], [2.0, 1.9])
    with pytest.raises(ValueError, match="does not fall"):
        s.fit(COMPUTE, np.linspace(1.0, 2.0, len(COMPUTE)))


def test_the_compute_optimal_size_of_each_budget() -> None:
    runs = [(1e13, 2.5, "x0.5"), (1e13, 2.4, "x1"), (1e13, 2.6, "x2"), (1e14, 2.2, "x1"), (1e14, 2.1, "x2")]
    assert s.compute_optimal(runs) == {1e13: (2.4, "x1"), 1e14: (2.1, "x2")}


@pytest.mark.parametrize("factor", [0.25, 2.0, 4.0])
def test_the_size_knob_grows_a_family_by_about_its_factor(factor: float) -> None:
    base = aunet.load_spec("aunet2-tiny")

    def stacks(spec) -> int:
        sizes = account(aunet.resolve_spec(spec)).parameters_by_component
        return sum(v for k, v in sizes.items() if k.endswith(("encoder", "decoder", "trunk")))

    grown = s.scaled(base, factor)
    assert grown.name == f"aunet2-tiny-x{factor:g}"
    assert 0.5 * factor < stacks(grown) / stacks(base) < 2 * factor
    assert all(level.dim % level.stage.head_dim == 0 for level in grown.levels)


def test_the_bootstrap_ends_when_budgets_gave_the_same_compute() -> None:
    # Tiny budgets can give runs of one step each: four points, two distinct computes.
    first = ([1e8, 1e8, 4e8, 4e8], [8.4, 8.3, 7.4, 7.5])
    second = ([1e8, 2e8, 4e8, 8e8], [8.0, 7.9, 7.8, 7.75])
    found = s.bootstrap_crossover(first, second, resamples=50)
    assert found.resamples == 50


def test_three_points_give_no_interval() -> None:
    # A three-parameter law passes through any three points: a resample has nothing new to fit.
    first = ([1e12, 3e12, 1e13], [3.0, 2.6, 2.3])
    second = ([1e12, 3e12, 1e13], [1.9, 1.8, 1.7])
    found = s.bootstrap_crossover(first, second, resamples=50)
    assert found.resamples == 0 and found.median is None and found.low is None and found.high is None
    assert found.compute == s.crossover(s.fit(*first), s.fit(*second))
