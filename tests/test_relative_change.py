"""One definition of relative change for every suite: hand-computed values and the zero case."""

import math

from obliviate.metrics.change import relative_change, relative_drop


def test_relative_change_and_drop_by_hand():
    assert relative_change(0.5, 0.6) == (0.6 - 0.5) / 0.5  # +20%
    assert math.isclose(relative_drop(0.91, 0.16), 0.75 / 0.91)
    assert relative_drop(2.0, 3.0) == -0.5  # a rise is a negative drop


def test_a_change_from_zero_is_undefined_not_zero():
    assert math.isnan(relative_change(0.0, 0.3))
    assert math.isnan(relative_drop(0.0, 0.0))
