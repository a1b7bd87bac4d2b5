"""Initialisers: fans, bounds and spreads, seeding, and a clear error for a bad name."""

import numpy as np
import pytest

from minissd.nn import init


def test_fans_of_a_conv_weight():
    assert init.fans((64, 3, 3, 3)) == (27, 576)  # fan_in = 3*3*3, fan_out = 64*3*3
    with pytest.raises(ValueError, match="2 dimensions"):
        init.fans((5,))


def test_bounds_and_spreads():
    rng = np.random.default_rng(0)
    shape = (128, 64, 3, 3)  # fan_in 576, fan_out 1152
    w = init.xavier_uniform(shape, rng)
    a = np.sqrt(6 / (576 + 1152))
    assert w.dtype == np.float32 and np.abs(w).max() <= a and np.abs(w).max() > 0.99 * a
    assert abs(init.he_normal(shape, rng).std() / np.sqrt(2 / 576) - 1) < 0.02
    assert abs(init.xavier_normal(shape, rng).std() / np.sqrt(2 / 1728) - 1) < 0.02
    assert np.abs(init.he_uniform(shape, rng)).max() <= np.sqrt(6 / 576)


def test_seeded_and_named():
    a = init.initialise((4, 3, 3, 3), np.random.default_rng(5), "xavier_uniform")
    b = init.initialise((4, 3, 3, 3), np.random.default_rng(5), "xavier_uniform")
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="unknown initialiser 'glorot'"):
        init.initialise((4, 3), None, "glorot")
