"""Statistics over the seeds of one row: mean, sample standard deviation and the 95 % Student-t
interval, with Student's t in closed form (no scipy).

Per row, metric and subset, over the n seeds' values x_i (on the paper's scale):
    mean  m = sum(x_i) / n
    std   s = sqrt(sum((x_i - m)^2) / (n - 1))          the sample standard deviation
    95 %  m ± t(0.975; n - 1) · s / sqrt(n)             Student's t with n - 1 degrees of freedom
With n = 1 there is no spread: s and the interval are None. A metric missing (None) in any seed
is None for the row: a mean over fewer seeds than the row holds would not be the row's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

CONFIDENCE = 0.95


def _t_two_sided(t: float, df: int) -> float:
    """P(|T| <= t) for Student's T with integer df degrees of freedom, in closed form
    (Abramowitz & Stegun 26.7.3-4): with θ = atan(t/√df),
        df odd:  2/π · (θ + sin θ · Σ_{k=1}^{(df-1)/2} a_k),  a_1 = cos θ, a_k = a_{k-1} cos²θ (2k-2)/(2k-1)
        df even: sin θ · Σ_{k=0}^{df/2-1} b_k,               b_0 = 1,     b_k = b_{k-1} cos²θ (2k-1)/(2k)"""
    theta = math.atan(t / math.sqrt(df))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:
        total, term = 0.0, math.cos(theta)
        for k in range(1, (df - 1) // 2 + 1):
            if k > 1:
                term *= cos2 * (2 * k - 2) / (2 * k - 1)
            total += term
        return 2 / math.pi * (theta + sin * total)
    total, term = 1.0, 1.0
    for k in range(1, df // 2):
        term *= cos2 * (2 * k - 1) / (2 * k)
        total += term
    return sin * total


def t_quantile(confidence: float, df: int) -> float:
    """t such that P(|T| <= t) = confidence (e.g. 4.3027 for 95 % and 2 degrees of freedom),
    by bisection on the closed form above (no scipy needed)."""
    low, high = 0.0, 1.0
    while _t_two_sided(high, df) < confidence:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if _t_two_sided(middle, df) < confidence else (low, middle)
    return (low + high) / 2


@dataclass(frozen=True)
class Aggregate:
    """One metric of one row over its seeds (see the formulas above)."""

    mean: float | None
    std: float | None  # None when n < 2
    n: int
    interval: tuple[float, float] | None  # the 95 % confidence interval; None when n < 2

    def as_json(self) -> dict:
        return {"mean": clean(self.mean), "std": clean(self.std), "n": self.n,
                "ci95": None if self.interval is None else [clean(x) for x in self.interval]}


def clean(value: float | None) -> float | None:
    """Float noise of the scale conversion removed (68.34000000000001 -> 68.34)."""
    return None if value is None else round(value, 10)


def aggregate(values: list[float | None]) -> Aggregate:
    """Mean, sample standard deviation and 95 % Student-t interval of one metric's seeds."""
    n = len(values)
    if n == 0 or any(value is None for value in values):
        return Aggregate(None, None, n, None)
    mean = math.fsum(values) / n
    if n == 1:
        return Aggregate(mean, None, 1, None)
    std = math.sqrt(math.fsum((value - mean) ** 2 for value in values) / (n - 1))
    half = t_quantile(CONFIDENCE, n - 1) * std / math.sqrt(n)
    return Aggregate(mean, std, n, (mean - half, mean + half))


def digits_keeping_order(values: Iterable[float | None], start: int, most: int = 10,
                         shown: Callable[[float, int], str] | None = None) -> int:
    """The fewest decimals, at least `start`, with which values that differ are still shown
    differently (NIST .0063 and .0113 are not both 0.01): rounding keeps order, so distinct
    values shown distinctly keep every order the raw values have. Float noise (below 1e-10)
    does not count as a difference; at most `most` decimals. `shown(value, digits)` is how a
    value is printed (default `f"{value:.{digits}f}"`)."""
    shown = shown or (lambda value, digits: f"{value:.{digits}f}")
    distinct = sorted({clean(value) for value in values if value is not None})
    digits = start
    while digits < most and len({shown(value, digits) for value in distinct}) < len(distinct):
        digits += 1
    return digits
