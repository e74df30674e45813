"""Monte Carlo statistics over trials."""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy import stats


def t_quantile(n, level: float = 0.95):
    """The Student-t quantile of a two-sided ``level`` interval of a mean over ``n``
    trials (``n - 1`` degrees of freedom, at least 1)."""
    return stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1))


def mean_ci(da: xr.DataArray, dim: str = "trial", level: float = 0.95):
    """Mean, standard deviation and the half-width of the Student-t confidence interval
    of the mean over ``dim``, counting only the trials that are not NaN (a sweep point with
    a stopping rule fills only some).  With a single trial the spread is unknown: sd and
    half-width are NaN (never a +-0 that would read as certainty); with none, all three are."""
    n = da.count(dim)
    mean = da.mean(dim)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = da.std(dim, ddof=1).where(n > 1)
        q = xr.apply_ufunc(t_quantile, n, kwargs={"level": level})
        half = (sd * q / np.sqrt(n)).where(n > 1)
    return mean, sd, half
