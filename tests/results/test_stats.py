"""nlg.results.stats: Student's t in closed form and the aggregation over seeds."""

from __future__ import annotations

import pytest

from nlg.results.stats import aggregate, t_quantile


def test_t_quantiles_are_the_tables():
    # two-sided 95 % points of Student's t from a printed table
    for df, value in ((1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (10, 2.2281), (30, 2.0423)):
        assert t_quantile(0.95, df) == pytest.approx(value, abs=1e-4)


def test_aggregation_gives_the_hand_computed_numbers():
    # 45.0, 46.0, 47.5: mean 138.5/3 = 46.1667; squares of the deviations 1.3611 + 0.0278 +
    # 1.7778 = 3.1667, / 2 = 1.5833, s = 1.2583; t(0.975, 2) = 4.3027, 4.3027 · 1.2583 / √3 = 3.1258
    three = aggregate([45.0, 46.0, 47.5])
    assert (three.mean, three.std, three.n) == (pytest.approx(46.16667, abs=1e-5), pytest.approx(1.25831, abs=1e-5), 3)
    assert three.interval == (pytest.approx(43.04087, abs=1e-4), pytest.approx(49.29247, abs=1e-4))
    # 10, 12: mean 11, s = √2, t(0.975, 1) = 12.7062, half width 12.7062 · √2 / √2
    two = aggregate([10.0, 12.0])
    assert two.std == pytest.approx(2 ** 0.5) and two.interval == (pytest.approx(-1.7062, abs=1e-4), pytest.approx(23.7062, abs=1e-4))
    # one seed: its value, no spread, no interval
    one = aggregate([40.0])
    assert (one.mean, one.std, one.n, one.interval) == (40.0, None, 1, None)
    # a metric one seed could not compute is not averaged over the others
    assert aggregate([0.3, None]).mean is None and aggregate([0.3, None]).n == 2


def test_digits_keep_every_order_of_the_raw_values():
    from nlg.results.stats import digits_keeping_order

    assert digits_keeping_order([0.0063, 0.0113], 2) == 3  # not both 0.01
    assert digits_keeping_order([0.0063, 0.0064, 0.0113], 2) == 4
    assert digits_keeping_order([8.85, 8.0], 2) == 2  # the start when nothing collides
    assert digits_keeping_order([0.1 + 0.2, 0.3, None], 2) == 2  # float noise is no difference
    assert digits_keeping_order([1.0, 1.0 + 1e-15], 0) == 0
    assert digits_keeping_order([3.02001, 3.02], 4, shown=lambda v, d: f"{v:.{d}g}") == 6
