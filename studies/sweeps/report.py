"""What a sweep store says: Monte Carlo statistics per point, the main table, figures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from rich.table import Table  # noqa: E402

from studies.plots import _save  # noqa: E402
from studies.stats import mean_ci  # noqa: E402

AXES_FIGURE = "accuracy_vs_axes.png"
HEATMAP_FIGURE = "accuracy_heatmap.png"
TABLE_FILE = "summary.csv"


def axis_dims(ds: xr.Dataset) -> list[str]:
    return [a["dim"] for a in json.loads(ds.attrs["axes"])]


def point_stats(ds: xr.Dataset) -> xr.Dataset:
    """Per point, after its own last timestep (``steps``): ``mean``, ``sd`` and 95% CI
    half-width ``ci95`` of the accuracy over its trials, ``trials``, and ``ideal``; fractions."""
    steps = ds.accuracy_ideal.notnull().sum("timestep")
    last = (steps - 1).clip(min=0)
    acc = ds.accuracy.isel(timestep=last)
    mean, sd, half = mean_ci(acc)
    return xr.Dataset({"mean": mean, "sd": sd, "ci95": half, "trials": acc.count("trial"),
                       "ideal": ds.accuracy_ideal.isel(timestep=last).where(steps > 0), "steps": steps})


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)


def summary_rows(ds: xr.Dataset) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the main table: one row per point."""
    dims = axis_dims(ds)
    st = point_stats(ds)
    head = [*dims, "t", "trials", "ideal %", "mean %", "sd", "95% CI", "lost"]
    rows = []
    for idx in np.ndindex(*[ds.sizes[d] for d in dims]):
        sel = dict(zip(dims, idx))
        p = st.isel(sel)
        labels = [_fmt(ds[d].values[i]) for d, i in sel.items()]
        if int(ds.done.isel(sel)) != 1:
            rows.append([*labels, "-", "-", "-", "not done", "-", "-", "-"])
            continue
        m, h, ideal = 100 * float(p["mean"]), 100 * float(p.ci95), 100 * float(p.ideal)
        rows.append([*labels, str(int(p.steps)), str(int(p.trials)), f"{ideal:.2f}", f"{m:.2f}",
                     f"{100 * float(p.sd):.2f}", f"{m - h:.2f} – {m + h:.2f}", f"{ideal - m:+.2f}"])
    return head, rows


def summary_table(ds: xr.Dataset, max_rows: int | None = None) -> Table:
    head, rows = summary_rows(ds)
    done = int(ds.done.sum())
    table = Table(title=f"accuracy after the last timestep, over Monte Carlo trials "
                        f"({done} of {ds.done.size} points done)")
    for h in head:
        table.add_column(h, justify="right")
    for row in rows[:max_rows]:
        table.add_row(*row)
    if max_rows is not None and len(rows) > max_rows:
        table.caption = f"{len(rows) - max_rows} more rows: xbar report STORE"
    return table


def write_csv(ds: xr.Dataset, path: Path) -> Path:
    head, rows = summary_rows(ds)
    with open(path, "w", newline="") as f:  # csv quotes labels with commas (JSON-valued axes)
        csv.writer(f, lineterminator="\n").writerows([head, *rows])
    return Path(path)


def _slice(ds: xr.Dataset, keep: list[str], at: dict[str, object]) -> tuple[xr.Dataset, str]:
    """The dataset with every axis not in ``keep`` fixed (at ``at[dim]``, else its first
    value), and a note of where it was fixed."""
    fixed = {}
    for d in axis_dims(ds):
        if d not in keep:
            fixed[d] = at.get(d, ds[d].values[0])
    note = ", ".join(f"{d} = {_fmt(v)}" for d, v in fixed.items())
    return ds.sel(fixed), note


def _positions(coord: xr.DataArray) -> tuple[np.ndarray, list[str] | None]:
    if np.issubdtype(coord.dtype, np.number) and coord.dtype != bool:
        return coord.values.astype(float), None
    return np.arange(coord.size, dtype=float), [str(v) for v in coord.values]


def axes_figure(ds: xr.Dataset, path: Path, at: dict | None = None) -> Path:
    """One panel per swept axis: final accuracy (mean and 95% CI over trials) against the
    axis, one line per value of another axis (the next one), the ideal network dashed;
    every other axis fixed at ``at`` (default: its first value), as the panel says."""
    at = at or {}
    dims = axis_dims(ds)
    ncols = min(3, len(dims))
    nrows = -(-len(dims) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.4 * ncols, 4.4 * nrows), squeeze=False,
                             constrained_layout=True)
    for ax in axes.flat[len(dims):]:
        ax.set_visible(False)
    for ax, dim in zip(axes.flat, dims):
        others = [d for d in dims if d != dim]
        group = others[0] if others and ds.sizes[others[0]] <= 8 else None
        part, note = _slice(ds, [dim] + ([group] if group else []), at)
        st = point_stats(part)
        x, ticks = _positions(ds[dim])
        for i, g in enumerate(part[group].values if group else [None]):
            one = st.sel({group: g}) if group else st
            label = f"{group} = {_fmt(g)}" if group else "crossbar"
            m, h = 100 * one["mean"].values, 100 * one.ci95.values
            ax.errorbar(x, m, yerr=h, color=f"C{i}", marker="o", ms=4, capsize=3, label=label)
            ax.plot(x, 100 * one.ideal.values, color=f"C{i}", ls="--", lw=0.8)
        if ticks:
            ax.set_xticks(x, ticks)
        ax.set(xlabel=dim, ylabel="test accuracy (%)",
               title=f"accuracy against {dim}" + (f"\n({note})" if note else ""))
        ax.legend(fontsize=7, title="dashed: ideal", title_fontsize=7)
    fig.suptitle("mean and 95% CI over Monte Carlo trials, after the last timestep")
    return _save(fig, path)


def heatmap_figure(ds: xr.Dataset, path: Path, x: str, y: str, at: dict | None = None) -> Path:
    """Mean final accuracy over two axes (others fixed as in :func:`axes_figure`), each
    cell annotated with mean ± 95% CI half-width."""
    part, note = _slice(ds, [x, y], at or {})
    st = point_stats(part).transpose(y, x)
    m, h = 100 * st["mean"].values, 100 * st.ci95.values
    fig, ax = plt.subplots(figsize=(1.3 * part.sizes[x] + 3, 0.8 * part.sizes[y] + 2.2),
                           constrained_layout=True)
    im = ax.imshow(m, cmap="viridis", origin="lower", aspect="auto")
    for (i, j), value in np.ndenumerate(m):
        if value == value:
            ax.text(j, i, f"{value:.1f}\n±{h[i, j]:.1f}", ha="center", va="center", fontsize=8,
                    color="w" if value < np.nanmean(m) else "k")
    ax.set_xticks(range(part.sizes[x]), [_fmt(v) for v in part[x].values])
    ax.set_yticks(range(part.sizes[y]), [_fmt(v) for v in part[y].values])
    ax.set(xlabel=x, ylabel=y, title="accuracy (%) after the last timestep" + (f"\n({note})" if note else ""))
    fig.colorbar(im, ax=ax, label="mean test accuracy (%)")
    return _save(fig, path)


def write_report(ds: xr.Dataset, out: Path, heatmap: tuple[str, str] | None = None,
                 at: dict | None = None) -> list[Path]:
    """The figures and the CSV table of a sweep into ``out`` (see :func:`studies.results.write_files`)."""
    from studies.results import write_files

    dims = axis_dims(ds)
    writers = {TABLE_FILE: lambda p: write_csv(ds, p), AXES_FIGURE: lambda p: axes_figure(ds, p, at)}
    if heatmap is None and len(dims) >= 2:
        heatmap = (dims[0], dims[1])
    if heatmap is not None:
        writers[HEATMAP_FIGURE] = lambda p: heatmap_figure(ds, p, heatmap[0], heatmap[1], at)
    return write_files(out, writers)
