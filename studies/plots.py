"""Figures of a robustness study: accuracy, read error and accumulated error against timestep."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import xarray as xr  # noqa: E402

from studies.stats import mean_ci  # noqa: E402


def robustness_figure(ds: xr.Dataset, path: Path) -> Path:
    """Three panels against timestep: accuracy (analog mean with its 95% CI over trials,
    and ideal); per layer, the error of one read (dashed) and the layer's accumulated
    output error (solid); per layer, the membrane divergence and spike mismatch."""
    t = ds.timestep.values
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    ax = axes[0]
    mean, _, half = mean_ci(ds.accuracy)
    ax.plot(t, 100 * ds.accuracy_ideal, "k--", label="ideal")
    ax.plot(t, 100 * mean, "C3-o", ms=3, label=f"crossbar (mean of {ds.sizes['trial']} trials)")
    ax.fill_between(t, 100 * (mean - half), 100 * (mean + half), color="C3", alpha=0.25, label="95% CI")
    ax.set(xlabel="timesteps read", ylabel="test accuracy (%)", title="accuracy if read after t steps")
    ax.legend(loc="lower right")
    ax = axes[1]
    for i, layer in enumerate(ds.layer.values):
        ax.plot(t, ds.layer_error.sel(layer=layer).mean("trial"), f"C{i}-", label=f"layer {layer}: accumulated")
        ax.plot(t, ds.read_error.sel(layer=layer).mean("trial"), f"C{i}--", label=f"layer {layer}: one read")
    ax.set(xlabel="timestep", ylabel="relative RMS error", title="output error per layer", yscale="log")
    ax.legend(fontsize=7)
    ax = axes[2]
    for i, layer in enumerate(ds.layer.values):
        mem = ds.membrane_error.sel(layer=layer).mean("trial")
        if bool(mem.notnull().any()):
            ax.plot(t, mem, f"C{i}-", label=f"layer {layer}: membrane (threshold units)")
            ax.plot(t, ds.spike_mismatch.sel(layer=layer).mean("trial"), f"C{i}:",
                    label=f"layer {layer}: spike mismatch")
    ax.set(xlabel="timestep", ylabel="divergence", title="accumulated state divergence")
    ax.legend(fontsize=7)
    name = ds.attrs.get("spec_device_name", "")
    fig.suptitle(f"{ds.attrs.get('study_arch', '')} SNN on {name} crossbars, tile "
                 f"{ds.attrs.get('spec_tile', '')}, ADC {ds.attrs.get('spec_adc_bits', '')} bits{_adc_words(ds.attrs)}")
    return _save(fig, path)


_METHOD_STYLE = {"surrogate": ("-", "o"), "surrogate-aware": ("-", "s"), "converted": ("--", None),
                 "converted-tuned": ("-.", None), "converted-aware": ((0, (6, 2, 1, 2, 1, 2)), None),
                 "qcfs": (":", None)}


def _method_curve(ds: xr.Dataset, method: str, tile: str | None):
    """(timesteps, mean, CI half-width) of one method on one tile (None: the ideal network).
    Surrogate models: each read after its own training timesteps; converted ones: every
    step of the run."""
    models = ds.model.values[ds.method.values == method]
    if method.startswith("surrogate"):
        t = ds.train_timesteps.sel(model=models).values
        pick = {"model": xr.DataArray(models, dims="point"), "timestep": xr.DataArray(t, dims="point")}
    else:
        run = int(ds.run_timesteps.sel(model=models[0]))
        t = ds.timestep.values[:run]
        pick = {"model": models[0], "timestep": t}
    if tile is None:
        acc = ds.accuracy_ideal.sel(**pick)
        return t, acc.values, None
    mean, _, half = mean_ci(ds.accuracy.sel(tile=tile, **pick))
    return t, mean.values, half.values


def timestep_accuracy_figure(ds: xr.Dataset, path: Path) -> Path:
    """Two panels against timesteps (log scale): accuracy of every method on the ideal
    network and on each tile size (95% CI over trials), and the accuracy lost to the
    crossbar (ideal minus crossbar).  Surrogate networks are points at their training
    timesteps; converted networks are curves over the steps of one run."""
    methods = [m for m in _METHOD_STYLE if m in set(ds.method.values)]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), constrained_layout=True)
    for method in methods:
        ls, marker = _METHOD_STYLE[method]
        t, ideal, _ = _method_curve(ds, method, None)
        axes[0].plot(t, 100 * ideal, color="k", ls=ls, marker=marker, ms=4, label=f"{method}, ideal")
        for i, tile in enumerate(ds.tile.values):
            t, mean, half = _method_curve(ds, method, tile)
            for ax, y in ((axes[0], mean), (axes[1], ideal - mean)):
                ax.plot(t, 100 * y, color=f"C{i}", ls=ls, marker=marker, ms=4, label=f"{method}, {tile}")
                ax.fill_between(t, 100 * (y - half), 100 * (y + half), color=f"C{i}", alpha=0.15)
    axes[0].set(ylabel="test accuracy (%)", title="accuracy after t timesteps")
    axes[1].set(ylabel="accuracy lost to the crossbar (points)", title="ideal minus crossbar")
    axes[1].axhline(0, color="0.5", lw=0.8)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("timesteps")
    axes[0].set_ylim(bottom=max(0.0, float(axes[0].get_ylim()[0])))
    axes[0].legend(fontsize=7, ncol=2, loc="lower right")
    fig.suptitle(_timestep_title(ds) + f"; {ds.sizes['trial']} trials, seed {ds.attrs.get('study_seed', '')}")
    return _save(fig, path)


def timestep_error_figure(ds: xr.Dataset, path: Path, tile: str | None = None) -> Path:
    """Error accumulation against timestep per layer, on one tile size (default: the
    largest), one row per method (the surrogate network trained longest): each layer's
    output error against the ideal network (accumulated, solid) and the error of one read
    (dashed); the membrane divergence (solid) and the spike mismatch (dotted)."""
    tile = tile or str(ds.tile.values[-1])
    methods = [m for m in _METHOD_STYLE if m in set(ds.method.values)]
    fig, axes = plt.subplots(len(methods), 2, figsize=(12, 3.4 * len(methods)), squeeze=False,
                             constrained_layout=True)
    for row, method in zip(axes, methods):
        model = str(ds.model.values[ds.method.values == method][-1])
        one = ds.sel(model=model, tile=tile).mean("trial")
        run = int(ds.run_timesteps.sel(model=model))
        one = one.isel(timestep=slice(0, run))
        t = one.timestep.values
        for li in one.layer.values:
            name = str(ds.layer_name.sel(model=model, layer=li).values)
            if not name:
                continue
            c = f"C{li}"
            row[0].plot(t, one.layer_error.sel(layer=li), color=c, ls="-", label=f"layer {name}: accumulated")
            row[0].plot(t, one.read_error.sel(layer=li), color=c, ls="--", label=f"layer {name}: one read")
            mem = one.membrane_error.sel(layer=li)
            if bool(mem.notnull().any()):
                row[1].plot(t, mem, color=c, ls="-", label=f"layer {name}: membrane (threshold units)")
                row[1].plot(t, one.spike_mismatch.sel(layer=li), color=c, ls=":",
                            label=f"layer {name}: spike mismatch")
        row[0].set(ylabel="relative RMS error", yscale="log", title=f"{model}: output error per layer")
        row[1].set(ylabel="divergence", title=f"{model}: state divergence per layer")
        for ax in row:
            ax.set_xlabel("timestep")
            if run > 16:
                ax.set_xscale("log", base=2)
            ax.legend(fontsize=7)
    fig.suptitle(_timestep_title(ds) + f", tile {tile}; mean of {ds.sizes['trial']} trials")
    return _save(fig, path)


def _adc_words(a: dict) -> str:
    """How the ADC was read, from a dataset's attributes ("" where they do not say)."""
    if "spec_analog_subtraction" not in a or a.get("spec_adc_bits") in (None, "None"):
        return ""
    ranges = (f"ranges at p{a.get('spec_adc_percentile')} per {a.get('spec_range_scope')}"
              if a.get("spec_ranges_from_calibration") else "worst-case ranges")
    return f" ({'analog' if a['spec_analog_subtraction'] else 'digital'} subtraction, {ranges})"


def _timestep_title(ds: xr.Dataset) -> str:
    a = ds.attrs
    return (f"{a.get('study_arch', '')} SNNs on {a.get('spec_device_name', '')} crossbars "
            f"(read noise {a.get('spec_device_read_sigma_rel', '')}), "
            f"{a.get('spec_r_wire_row', '')} ohm/cell wires, ADC {a.get('spec_adc_bits', '')} bits{_adc_words(a)}")


def _save(fig, path: Path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
