"""lowres.train.schedules: the learning-rate multipliers as pure functions of the update number.

Contract: tri_stage warms up linearly from init_scale to 1, holds at 1, decays exponentially to final_scale
and stays there, each stage taking its share of max_steps; warmup_decay warms up linearly from (almost) 0
to 1 over its share, then decays polynomially to final_scale at max_steps.
"""

from __future__ import annotations

import math

import pytest

from lowres.train.schedules import tri_stage, warmup_decay


def _curve(fn, max_steps, **kw):
    return [fn(s, max_steps, **kw) for s in range(max_steps + 1)]


@pytest.mark.parametrize(("max_steps", "warmup", "hold", "decay"), [(1000, 0.1, 0.4, 0.5), (200, 0.05, 0.65, 0.3),
                                                                      (13000, 0.1, 0.4, 0.5), (50, 0.2, 0.0, 0.8)])
def test_tri_stage_endpoints_stages_and_shares(max_steps, warmup, hold, decay):
    kw = dict(warmup=warmup, hold=hold, decay=decay, init_scale=0.01, final_scale=0.05)
    curve = _curve(tri_stage, max_steps, **kw)
    warm, held = round(warmup * max_steps), round(hold * max_steps)
    assert curve[0] == pytest.approx(0.01)
    assert curve[max_steps] == pytest.approx(0.05) and curve[-2] > 0.05
    # warm-up: strictly rising, linear, reaching the peak exactly where the hold starts
    rise = curve[: warm + 1]
    assert all(b > a for a, b in zip(rise, rise[1:], strict=False))
    steps = [b - a for a, b in zip(rise, rise[1:], strict=False)]
    assert max(steps) - min(steps) < 1e-9
    # hold: at the peak for its share of the updates
    assert curve[warm: warm + held] == [1.0] * held
    # (the decay starts from the peak: exp(0) at its first update, so the peak lasts one update more)
    assert sum(1 for v in curve if v == 1.0) == held + 1
    # decay: strictly falling and exponential (equal ratios between consecutive updates)
    fall = curve[warm + held: max_steps + 1]
    assert all(b < a for a, b in zip(fall, fall[1:], strict=False))
    ratios = [b / a for a, b in zip(fall, fall[1:], strict=False)]
    assert max(ratios) - min(ratios) < 1e-9
    assert ratios[0] == pytest.approx(0.05 ** (1 / len(ratios)))
    assert all(0.01 <= v <= 1.0 for v in curve)


def test_tri_stage_stays_at_the_floor_after_max_steps_and_without_decay():
    assert tri_stage(5000, 1000) == pytest.approx(0.05)
    assert tri_stage(10**7, 1000, final_scale=0.2) == pytest.approx(0.2)
    # no decay share: warm-up, then hold to the end
    curve = _curve(tri_stage, 100, warmup=0.5, hold=0.5, decay=0.0)
    assert curve[50:100] == [1.0] * 50 and curve[0] == pytest.approx(0.01)


def test_tri_stage_without_warmup_starts_at_the_peak():
    curve = _curve(tri_stage, 100, warmup=0.0, hold=0.5, decay=0.5)
    assert curve[:50] == [1.0] * 50 and curve[50] == 1.0 and curve[51] < 1.0


@pytest.mark.parametrize(("max_steps", "warmup", "final_scale"), [(2000, 0.1, 0.0), (100, 0.25, 0.1), (7, 0.3, 0.0)])
def test_warmup_decay_endpoints_and_stages(max_steps, warmup, final_scale):
    curve = _curve(warmup_decay, max_steps, warmup=warmup, final_scale=final_scale)
    warm = round(warmup * max_steps)
    assert curve[0] == pytest.approx(1 / warm)  # the first update already moves
    assert curve[warm - 1] == pytest.approx(1.0) and curve[warm] == pytest.approx(1.0)  # the peak
    rise = curve[:warm]
    assert all(b > a for a, b in zip(rise, rise[1:], strict=False))
    fall = curve[warm:]
    assert all(b < a for a, b in zip(fall, fall[1:], strict=False))
    assert curve[max_steps] == pytest.approx(final_scale)
    assert warmup_decay(10 * max_steps, max_steps, warmup=warmup, final_scale=final_scale) == pytest.approx(final_scale)
    # linear decay (power 1): the halfway point of the decay is halfway between the peak and the floor
    if (max_steps - warm) % 2 == 0:
        mid = warm + (max_steps - warm) // 2
        assert curve[mid] == pytest.approx((1 + final_scale) / 2)


def test_warmup_decay_power_and_no_warmup():
    assert warmup_decay(0, 100, warmup=0.0) == 1.0
    assert warmup_decay(50, 100, warmup=0.0, power=2.0) == pytest.approx(0.25)
    assert warmup_decay(50, 100, warmup=0.0, power=0.5) == pytest.approx(math.sqrt(0.5))
    assert warmup_decay(100, 100, warmup=0.0) == 0.0
