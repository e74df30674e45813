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
                 f"{ds.attrs.get('spec_tile', '')}, ADC {ds.attrs.get('spec_adc_bits', '')} bits")
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
