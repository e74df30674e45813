"""Monte Carlo statistics over trials, against the Student-t closed form."""

import numpy as np
import xarray as xr
from scipy import stats

from studies.stats import mean_ci


def test_confidence_interval_is_student_t_and_unknown_with_one_trial():
    acc = xr.DataArray([[0.90, 0.80], [0.92, np.nan], [0.97, np.nan]], dims=("trial", "timestep"))
    mean, sd, half = mean_ci(acc)
    x = np.array([0.90, 0.92, 0.97])
    np.testing.assert_allclose(mean[0], x.mean())
    np.testing.assert_allclose(sd[0], x.std(ddof=1))
    np.testing.assert_allclose(half[0], stats.t.ppf(0.975, 2) * x.std(ddof=1) / np.sqrt(3))
    # one trial: the spread is unknown, not zero
    assert float(mean[1]) == 0.80 and np.isnan(float(sd[1])) and np.isnan(float(half[1]))
    _, sd, half = mean_ci(xr.DataArray([np.nan, np.nan], dims="trial"))
    assert np.isnan(float(sd)) and np.isnan(float(half))
