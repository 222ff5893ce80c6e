"""The numerical derivatives that gradcheck trusts: how accurate each estimate is on a known function."""

import numpy as np

from cifar_scratch.nn.finite_differences import extrapolated_gradient, numerical_gradient


def test_extrapolation_cancels_the_step_squared_error_of_central_differences():
    x = np.array([1.3, -0.4])
    f = lambda: float(np.exp(3 * x).sum())  # noqa: E731
    exact = 3 * np.exp(3 * x)
    central = numerical_gradient(f, x, 1e-3)
    extrapolated = extrapolated_gradient(f, x, 1e-3, np.arange(2))
    assert np.all(np.abs(central - exact) / exact > 1e-6)  # h^2 f''' / 6f' = 1.5e-6
    assert np.all(np.abs(extrapolated - exact) / exact < 1e-10)
    assert np.array_equal(x, [1.3, -0.4])  # restored
