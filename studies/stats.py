"""Monte Carlo statistics over trials."""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy import stats


def mean_ci(da: xr.DataArray, dim: str = "trial", level: float = 0.95):
    """Mean, standard deviation and the half-width of the Student-t confidence interval
    of the mean over ``dim`` (half-width 0 with a single trial)."""
    n = da.sizes[dim]
    mean = da.mean(dim)
    sd = da.std(dim, ddof=1) if n > 1 else xr.zeros_like(mean)
    half = sd * (stats.t.ppf(0.5 + level / 2, n - 1) / np.sqrt(n)) if n > 1 else xr.zeros_like(mean)
    return mean, sd, half
