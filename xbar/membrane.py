"""The analog neuron: each output's membrane as charge on a capacitor.

With ``Spec(neuron="analog")`` a layer's column currents are not converted at every
timestep: each output's current (its tile-rows' currents summed on one node, a pair's
subtracted) charges that neuron's membrane capacitor for the read, and the neuron's leak,
threshold and reset act on the voltage in analog, a comparator giving the spike.  So
nothing is rounded on the way to the membrane (a current below an ADC's half LSB still
charges it), and only spikes leave the layer.

What differs from neuron to neuron, drawn once per chip (per Monte Carlo trial, from the
programming seed's ``neurons`` generator, :class:`xbar.streams.ProgrammingDraws`):

- the capacitor, ``C_i = C (1 + neuron_gain_sigma * N(0, 1))``: the membrane voltage a
  charge gives is ``Q / C_i``, so the neuron's input is multiplied by ``C / C_i``;
- the firing threshold (the comparator's offset and its reference),
  ``theta_i = theta (1 + neuron_threshold_sigma * N(0, 1))``, with a reset that removes
  the neuron's own threshold (or resets to 0): exactly the nominal neuron with its input
  multiplied by ``theta / theta_i``, since its dynamics (a linear leak, then the
  threshold and reset) scale with the voltage.

Both are therefore one gain per neuron on what the crossbar layer delivers (its read and
its bias, a current into the same capacitor): :func:`neuron_gains`, applied by
evaluation's layers and hardware-aware training alike, whatever library's neuron follows
the layer.  A conv layer's outputs are distinct neurons at every position (each its own
capacitor), so each draws its own.

And what every neuron shares: the capacitor's leakage (``neuron_leakage``), a share of
the membrane lost at every step beyond the neuron's own leak, as charge leaking through
the reset switch and the junctions that hold it: ``v_t = (beta - leakage) v_{t-1} +
x_t`` for a neuron ``v_t = beta v_{t-1} + x_t``.  It acts on the membrane the neuron
keeps between steps (:func:`leak_hooks`: one hook before every neuron of the network,
whatever its library, taking ``leakage * v_{t-1}`` from its input).

With ideal parts (all three 0) the analog neuron is the digital one without an ADC.  Not
modelled: the comparator's noise, and a reset that subtracts a nominal charge whatever
the threshold.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from xbar.neurons import kept_membrane
from xbar.spec import Spec


def neuron_gains(shape: tuple[int, ...], spec: Spec, gen: torch.Generator, dtype=torch.float64) -> torch.Tensor | None:
    """Each analog neuron's gain on its input, ``shape`` (trials first, then one neuron
    per output element), ``C / C_i * theta / theta_i``; ``None`` where every neuron is
    nominal (digital neurons, or analog with ideal parts)."""
    if spec.neuron != "analog" or not (spec.neuron_gain_sigma or spec.neuron_threshold_sigma):
        return None
    capacitor = 1 + spec.neuron_gain_sigma * torch.randn(shape, generator=gen, dtype=dtype, device=gen.device)
    threshold = 1 + spec.neuron_threshold_sigma * torch.randn(shape, generator=gen, dtype=dtype, device=gen.device)
    bad = int(((capacitor <= 0) | (threshold <= 0)).sum())
    if bad:
        raise ValueError(f"analog neurons: {bad} of {capacitor.numel()} neurons drew a capacitor or threshold "
                         f"<= 0 (neuron_gain_sigma = {spec.neuron_gain_sigma:g}, neuron_threshold_sigma = "
                         f"{spec.neuron_threshold_sigma:g}): a Gaussian spread this wide is not a physical part; "
                         "lower the spreads")
    return 1.0 / (capacitor * threshold)


def leak_hooks(model: nn.Module, spec: Spec, skip=()) -> list:
    """With analog neurons that leak (``Spec.neuron_leakage``), a hook before the forward of
    every module of ``model`` but ``skip``: where the module keeps a membrane of its
    input's shape (a neuron, :func:`xbar.neurons.kept_membrane`), ``leakage`` times that
    membrane (the previous step's) is taken from its input.  Returns the hooks' handles
    (``.remove()`` each to take them off); none without leakage."""
    if spec.neuron != "analog" or not spec.neuron_leakage:
        return []
    leakage = spec.neuron_leakage

    def leak(module: nn.Module, args):
        if not args or not isinstance(args[0], torch.Tensor):
            return None
        membrane = kept_membrane(module, args)
        if membrane is None or membrane.shape != args[0].shape:
            return None  # not a neuron, or its first step (no membrane yet)
        return (args[0] - leakage * membrane, *args[1:])

    skipped = {id(m) for m in skip}
    return [m.register_forward_pre_hook(leak) for m in model.modules()
            if id(m) not in skipped and not list(m.children())]
