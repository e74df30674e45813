"""``from_nir(graph, dt=..., exporter=...)``: a NIR graph as a single-step torch network.

NIR (the Neuromorphic Intermediate Representation) describes a network as a graph of
continuous-time primitives; snntorch, SpikingJelly, norse, sinabs, rockpool and spyx
export to it.  This
module runs such a graph one timestep of ``dt`` seconds per call, as xbar drives every
network, with its weight nodes as ``nn.Linear``/``nn.Conv2d`` modules that
:func:`xbar.convert` puts on crossbars.

How the ODEs are stepped (forward Euler, step ``dt``; ``I`` is the node's input, the sum
of everything its incoming edges carry):

============  ===============================================================  ========
node          one step                                                         output
============  ===============================================================  ========
LIF           ``v += dt/tau * (v_leak - v + r I)``; spike ``z = v > v_thr``;     ``z``
              where ``z``: ``v = v_reset``
CubaLIF       ``i += dt/tau_syn * (w_in I - i)``, then                          ``z``
              ``v += dt/tau_mem * (v_leak - v + r i)`` (the new ``i``); spike
              and reset as LIF
CubaLI        as CubaLIF, without spikes                                        ``v``
IF            ``v += dt * r I``; spike and reset as LIF                         ``z``
LI            ``v += dt/tau * (v_leak - v + r I)``                              ``v``
I             ``v += dt * r I`` (integrator)                                    ``v``
Threshold     ``z = I > threshold``                                             ``z``
Affine        ``W I + b``                 Linear   ``W I``                      Scale    ``s I``
Conv2d        the convolution             Flatten  over NIR's (unbatched) dims
SumPool2d     sum over windows            AvgPool2d  mean over windows
============  ===============================================================  ========

State starts at ``v = v_leak`` (``0`` for IF and I) and ``i = 0``.  With the parameters
snntorch and SpikingJelly export (``r = tau/dt``, ``w_in = tau_syn/dt``), a LIF step is
``v = beta v + I`` with ``beta = 1 - dt/tau``: their own update, so ``dt`` must be the
one the graph was exported with.  NIR graphs do not record it.  A step with
``dt/tau > 1`` is refused: forward Euler overshoots the rest state there.

Where an exporter's own update differs from these equations, ``from_nir(...,
exporter=...)`` steps its nodes as that library does (each checked step by step against
the library in ``tests/test_nir.py``):

``"snntorch"`` (dt fixed at 1e-4 s: its export writes every time constant for it)
    LIF as above (``Leaky`` with ``reset_mechanism="zero"``).  CubaLIF as ``Synaptic``,
    and a LIF on a loop (``RLeaky``, exported as a nested graph with its recurrent
    weights) as ``RLeaky``: reset one step late, the step after a spike its membrane,
    with that step's input added, set to ``v_reset``.  snntorch writes ``v_reset = 0`` whatever the neuron's
    ``reset_mechanism``: a network trained with its default ``"subtract"`` reads
    otherwise from its graph; run the snntorch model itself (``xbar.convert``).
``"spikingjelly"`` (export dt 1e-4 s by default)
    NIR's equations (IFNode, LIFNode, ParametricLIFNode, CUBALIFNode, hard reset: its
    export refuses soft resets).
``"norse"`` (export dt 1e-3 s by default)
    norse writes ``tau = dt / tau_inv``, so its step ``dt * tau_inv`` is ``dt**2 / tau``;
    its IF adds the input as it is (``v += r I``); its CubaLIF (``LIFCell``) adds the
    input to the current first, steps the membrane with that current, then decays it:
    ``j = i + w_in I``, ``v += dt/tau_mem (v_leak - v + r j)``, ``i = j - dt/tau_syn j``.
``"sinabs"`` (time constants in steps: dt = 1)
    ``IAF`` ``v += I``, ``LIF`` ``v = a v + (1 - a) I`` (its default ``norm_input``),
    ``ExpLeak`` ``v = a v + I``, ``a = exp(-1/tau)``; ``floor(v/threshold)`` spikes where
    ``v >= threshold``, subtracted (``MultiSpike``, ``MembraneSubtract``); IAF floored at
    ``-threshold``.  Its graphs do not record these settings: a warning says so.
``"rockpool"`` (dt read from the graph, which writes ``r = tau exp(-dt/tau) / dt``)
    exact exponential decays: ``LIFNeuronTorch`` ``v = a v + I``, ``LIFTorch``
    ``i = b (i + w_in I)``, ``v = a v + i``, ``ExpSynTorch`` ``v = b (v + I)``; spikes
    and reset as sinabs's.
``"spyx"`` (export dt 1 by default)
    decays ``1 - dt/tau``, the input added as it is; a neuron fires on its state before
    the step (``z = v > threshold``) and subtracts the threshold: before the decay for
    CuBaLIF, after it for IF and LIF.

Edges that close a loop (recurrent weights) carry the previous step's output; at the
first step, what their source gives for outputs at rest: a weight node's bias, else zero.  Nested graphs are flattened into their parent.  A graph must have one
input and one output node.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

SUPPORTED = ("Input", "Output", "Affine", "Linear", "Conv2d", "Flatten", "SumPool2d",
             "AvgPool2d", "Scale", "Threshold", "LIF", "CubaLIF", "CubaLI", "IF", "LI", "I")


def _np(a) -> np.ndarray:
    """A node's parameter as a numpy array, whatever the exporter left there: a numpy array
    (``nir.read``), a torch tensor (snntorch and norse, in memory; on any device, with or
    without gradient) or a Python number, tuple or list."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _t(a, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(_np(a).astype(np.float64), dtype=dtype)


def _pair(a) -> tuple[int, int]:
    a = np.atleast_1d(_np(a)).astype(int).tolist()
    return (a[0], a[0]) if len(a) == 1 else (a[0], a[1])


class _Neuron(nn.Module):
    """A NIR neuron node as one linear update per step and a firing rule.

    Membrane ``v = decay v + gain I + drive`` (``I``: the input; for CubaLIF/CubaLI the
    synaptic current ``i = syn_decay i + syn_gain I``, which the membrane then sees; with
    ``jump``, norse's order: ``j = i + syn_gain I``, the membrane sees ``j``, then
    ``i = syn_decay j``).  The coefficients hold each exporter's update
    (:func:`_coefficients`).  ``fire``: ``"reset"`` (``z = v > threshold``, ``v = v_reset``
    where ``z``), ``"late"`` (snntorch's late reset: the step after a spike, the membrane,
    that step's input in it, set to ``v_reset``), ``"subtract"`` (sinabs and rockpool:
    ``n = floor(v / threshold)`` spikes where ``v >= threshold``, ``v -= n threshold``) or
    ``"first"`` (spyx: ``z = v > threshold`` on the state before the step, subtracted
    from it: before the decay for CubaLIF, after it for IF and LIF).
    State ``mem`` (and ``syn``) back to rest with ``reset()``."""

    def __init__(self, params: dict[str, torch.Tensor], fire: str | None = None, jump: bool = False) -> None:
        super().__init__()
        for name, value in params.items():
            self.register_buffer(name, value)
        self.fire, self.jump = fire, jump
        self.mem: torch.Tensor | None = None
        self.syn: torch.Tensor | None = None
        self.fired: torch.Tensor | None = None  # a late reset: last step's spikes, reset now

    def reset(self) -> None:
        self.mem = None
        self.syn = None
        self.fired = None

    def extra_repr(self) -> str:
        fire = "no spikes" if self.fire is None else f"fire={self.fire}"
        return f"{'synapse and membrane' if hasattr(self, 'syn_decay') else 'membrane'}, {fire}"

    def _rest(self, x: torch.Tensor) -> torch.Tensor:
        return self.v_rest.to(x.dtype).expand_as(x).clone()

    def _membrane(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.decay * v + self.gain * x + self.drive

    def _synapse(self, x: torch.Tensor) -> torch.Tensor:
        """Step the synaptic current; returns what the membrane sees."""
        i = torch.zeros_like(x) if self.syn is None else self.syn
        if self.jump:
            j = i + self.syn_gain * x
            self.syn = self.syn_decay * j
            return j
        self.syn = self.syn_decay * i + self.syn_gain * x
        return self.syn

    def _spikes(self) -> torch.Tensor:
        if self.fire == "subtract":
            n = torch.where(self.mem >= self.threshold, torch.floor(self.mem / self.threshold),
                            torch.zeros_like(self.mem))
            self.mem = self.mem - n * self.threshold
            if hasattr(self, "v_min"):
                self.mem = torch.maximum(self.mem, self.v_min)
            return n
        reset = self.v_reset.to(self.mem.dtype).expand_as(self.mem)
        if self.fire == "late":
            if self.fired is not None:
                self.mem = torch.where(self.fired, reset, self.mem)
            self.fired = self.mem > self.threshold
            return self.fired.to(self.mem.dtype)
        z = (self.mem > self.threshold).to(self.mem.dtype)
        self.mem = torch.where(z > 0, reset, self.mem)
        return z

    def forward(self, x):
        v = self._rest(x) if self.mem is None else self.mem
        cuba = hasattr(self, "syn_decay")
        current = self._synapse(x) if cuba else x
        if self.fire == "first":  # spyx: this step's spikes are the last step's state's, subtracted
            z = (v > self.threshold).to(v.dtype)
            if cuba:  # its CuBaLIF subtracts before the decay, its IF and LIF after
                self.mem = self._membrane(v - z * self.threshold, current)
            else:
                self.mem = self._membrane(v, current) - z * self.threshold
            return z
        self.mem = self._membrane(v, current)
        return self.mem if self.fire is None else self._spikes()


class _Elementwise(nn.Module):
    def __init__(self, kind: str, value: torch.Tensor) -> None:
        super().__init__()
        self.kind = kind
        self.register_buffer("value", value)

    def forward(self, x):
        return x * self.value if self.kind == "scale" else (x > self.value).to(x.dtype)


class _Flatten(nn.Module):
    """NIR's ``start_dim``/``end_dim`` count the dims of one sample (no batch)."""

    def __init__(self, start: int, end: int) -> None:
        super().__init__()
        self.start, self.end = (start + 1 if start >= 0 else start), (end + 1 if end >= 0 else end)

    def forward(self, x):
        return torch.flatten(x, self.start, self.end)


class _SumPool2d(nn.AvgPool2d):
    def forward(self, x):
        k = self.kernel_size
        return super().forward(x) * (k[0] * k[1])


def _linear(node, bias: bool, dtype) -> nn.Linear:
    w = _np(node.weight)
    layer = nn.Linear(w.shape[1], w.shape[0], bias=bias, dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_(_t(w, dtype))
        if bias:
            layer.bias.copy_(_t(node.bias, dtype))
    return layer


def _conv2d(node, dtype) -> nn.Conv2d:
    w = _np(node.weight)
    padding = node.padding if isinstance(node.padding, str) else _pair(node.padding)
    bias = node.bias is not None and _np(node.bias).size > 0
    conv = nn.Conv2d(w.shape[1] * int(node.groups), w.shape[0], tuple(w.shape[2:]),
                     stride=_pair(node.stride), padding=padding, dilation=_pair(node.dilation),
                     groups=int(node.groups), bias=bias, dtype=dtype)
    with torch.no_grad():
        conv.weight.copy_(_t(w, dtype))
        if bias:
            conv.bias.copy_(_t(np.broadcast_to(_np(node.bias), (w.shape[0],)), dtype))
    return conv


# Each exporter's export dt (s).  sinabs writes its time constants in steps (dt = 1 step);
# rockpool's is read from the graph: it writes r = tau exp(-dt/tau) / dt (:func:`_rockpool_dt`).
EXPORTERS = {"snntorch": 1e-4, "spikingjelly": 1e-4, "norse": 1e-3, "sinabs": 1.0, "rockpool": None, "spyx": 1.0}
# The neuron kinds each exporter writes, where it is not every kind NIR has.
_WRITES = {"sinabs": ("IF", "LIF", "LI"), "rockpool": ("LIF", "CubaLIF", "LI"), "spyx": ("IF", "LIF", "CubaLIF", "LI")}
_TAUS = {"LIF": ("tau",), "LI": ("tau",), "CubaLIF": ("tau_syn", "tau_mem"), "CubaLI": ("tau_syn", "tau_mem"),
         "IF": (), "I": ()}


def _f64(node, name: str) -> np.ndarray:
    return _np(getattr(node, name)).astype(np.float64)


def _membrane_tau(node) -> np.ndarray:
    return _f64(node, "tau" if hasattr(node, "tau") else "tau_mem")


def _euler(key: str, node, dt: float, exporter: str | None) -> dict[str, np.ndarray]:
    """NIR's forward Euler step (snntorch, SpikingJelly, and norse's with its step
    ``dt * tau_inv = dt**2 / tau``; norse's IF adds its input as it is)."""
    kind = type(node).__name__
    step = dt * dt if exporter == "norse" else dt
    k = {tau: step / _f64(node, tau) for tau in _TAUS[kind]}
    _check_steps(key, node, k, dt, exporter)
    if kind in ("IF", "I"):
        return {"decay": np.ones(()), "gain": (1.0 if exporter == "norse" else dt) * _f64(node, "r"),
                "drive": np.zeros(())}
    km = k["tau"] if "tau" in k else k["tau_mem"]
    c = {"decay": 1 - km, "gain": km * _f64(node, "r"), "drive": km * _f64(node, "v_leak")}
    if "tau_syn" in k:
        w_in = _f64(node, "w_in")
        c["syn_decay"] = 1 - k["tau_syn"]
        c["syn_gain"] = w_in if exporter == "norse" else k["tau_syn"] * w_in
    return c


def _sinabs(node) -> dict[str, np.ndarray]:
    """sinabs's layers with their defaults: ``IAF`` ``v += I``; ``LIF`` (``norm_input=True``)
    ``v = a v + (1 - a) I``; ``ExpLeak`` (``norm_input=False``) ``v = a v + I``;
    ``a = exp(-1/tau)``, tau in steps."""
    kind = type(node).__name__
    r = _f64(node, "r")
    if kind == "IF":
        return {"decay": np.ones(()), "gain": r, "drive": np.zeros(())}
    a = np.exp(-1.0 / _f64(node, "tau"))
    drive = (1 - a) * _f64(node, "v_leak")  # the rest state stays v_leak (sinabs writes 0)
    return {"decay": a, "gain": (1 - a) * r if kind == "LIF" else r, "drive": drive}


def _rockpool(key: str, node, dt: float) -> dict[str, np.ndarray]:
    """rockpool's updates, exact exponential decays per step of ``dt``: ``LIFNeuronTorch``
    ``v = a v + I + bias``; ``LIFTorch`` ``i = b (i + w_in I)``, ``v = a v + i + bias``;
    ``ExpSynTorch`` ``v = b (v + I)``; ``a = exp(-dt/tau_mem)``, ``b = exp(-dt/tau_syn)``.
    rockpool writes its bias as ``v_leak`` (zeros: its export drops the bias)."""
    kind = type(node).__name__
    a = np.exp(-dt / _membrane_tau(node))
    bias = _f64(node, "v_leak")
    if kind == "LI":
        if np.any(bias != 0):
            raise ValueError(f"from_nir: node {key!r} (LI) has a non-zero v_leak: rockpool's ExpSynTorch "
                             "has none, so this graph is not rockpool's; read it with exporter=None")
        return {"decay": a, "gain": a, "drive": np.zeros(())}
    c = {"decay": a, "gain": np.ones(()), "drive": bias}
    if kind == "CubaLIF":
        b = np.exp(-dt / _f64(node, "tau_syn"))
        c.update(syn_decay=b, syn_gain=b * _f64(node, "w_in"))
    return c


def _spyx(key: str, node, dt: float) -> dict[str, np.ndarray]:
    """spyx's updates: decays ``1 - dt/tau`` (its ``beta``, ``alpha``), the input added as
    it is (spyx writes ``r = beta`` for its LIF, and does not read it back)."""
    c = _euler(key, node, dt, None)
    c.update(gain=np.ones(()), drive=np.zeros(()))
    if "syn_gain" in c:
        c["syn_gain"] = np.ones(())
    return c


def _coefficients(key: str, node, dt: float, exporter: str | None) -> dict[str, np.ndarray]:
    """The linear update of a neuron node (:class:`_Neuron`) as its exporter steps it."""
    if exporter == "spyx":
        return _spyx(key, node, dt)
    if exporter == "sinabs":
        return _sinabs(node)
    if exporter == "rockpool":
        return _rockpool(key, node, dt)
    return _euler(key, node, dt, exporter)


def _check_kinds(nodes: dict, exporter: str | None) -> None:
    """Refuse a neuron kind the named exporter never writes: the graph is another's."""
    for key, node in nodes.items():
        kind = type(node).__name__
        if exporter in _WRITES and kind in _TAUS and kind not in _WRITES[exporter]:
            raise ValueError(f"from_nir: node {key!r} is a {kind}, which {exporter} does not export (it "
                             f"writes {', '.join(_WRITES[exporter])}): this graph is not {exporter}'s; "
                             "read it with exporter=None and its dt")


def _fire(key: str, kind: str, exporter: str | None, looped: set) -> str | None:
    """The firing rule (:class:`_Neuron`): ``None`` for the kinds without spikes."""
    if kind in ("LI", "CubaLI", "I"):
        return None
    if exporter in ("sinabs", "rockpool"):
        return "subtract"
    if exporter == "spyx":
        return "first"
    if exporter == "snntorch" and (kind == "CubaLIF" or (kind == "LIF" and key in looped)):
        return "late"  # Synaptic, and RLeaky (a LIF on a loop)
    return "reset"


def _neuron(key: str, node, dt: float, exporter: str | None, looped: set, dtype) -> _Neuron:
    kind = type(node).__name__
    p = {name: _t(value, dtype) for name, value in _coefficients(key, node, dt, exporter).items()}
    rest = np.zeros(()) if exporter == "rockpool" or kind in ("IF", "I") else _np(node.v_leak)
    p["v_rest"] = _t(rest, dtype)
    fire = _fire(key, kind, exporter, looped)
    if fire is not None:
        p["threshold"] = _t(node.v_threshold, dtype)
        p["v_reset"] = _t(node.v_reset if node.v_reset is not None else np.zeros_like(_np(node.v_threshold)), dtype)
    if exporter == "sinabs" and kind == "IF":  # sinabs's from_model and from_nir floor it there
        p["v_min"] = -p["threshold"]
    return _Neuron(p, fire, jump=exporter == "norse" and "tau_syn" in _TAUS[kind])


def _rockpool_dt(nodes: dict, dt: float | None) -> float:
    """The dt a rockpool graph was exported with: each neuron's ``r = tau exp(-x) / dt``
    with ``x = dt/tau`` gives ``x exp(x) = 1/r``, so ``dt = tau W(1/r)`` (Lambert's W)."""
    from scipy.special import lambertw

    found = [_membrane_tau(n) * lambertw(1.0 / _f64(n, "r")).real for n in nodes.values()
             if type(n).__name__ in _TAUS]
    if not found:
        raise ValueError("from_nir: a rockpool graph without neurons has no dt to read: pass exporter=None "
                         "and dt")
    values = np.concatenate([np.ravel(v) for v in found])
    lo, hi = float(values.min()), float(values.max())
    if not np.isfinite(values).all() or hi > lo * (1 + 1e-3):
        raise ValueError(f"from_nir: the graph's neurons give dt from {lo:.6g} to {hi:.6g} s (from their r and "
                         "tau, as rockpool writes them): one rockpool network has one dt, so this graph is "
                         "not rockpool's; read it with exporter=None and its dt")
    if dt is not None and abs(dt - lo) > 1e-3 * lo:
        raise ValueError(f"from_nir: dt = {dt!r} is not the {lo:.6g} s this rockpool graph was exported with "
                         "(its neurons' r and tau give it): leave dt out")
    return float(np.median(values))


def _check_steps(key: str, node, factors: dict[str, np.ndarray], dt: float, exporter: str | None) -> None:
    """Refuse a step that forward Euler cannot take faithfully: ``dt/tau > 1`` overshoots
    the rest state (beyond 2 it diverges), so the graph would run another network.
    ``factors``: ``dt/tau`` by the name of each time constant."""
    for tau, factor in factors.items():
        if factor.size == 0 or float(factor.max()) <= 1.0:
            continue
        smallest = float(_np(getattr(node, tau)).min())
        hint = ("norse writes tau = dt / tau_mem_inv (1e-5 s with its defaults): pass "
                "exporter='norse', with its export dt" if exporter is None else
                f"check that dt is the one the graph was exported with ({exporter}: "
                f"{EXPORTERS[exporter]:g} s by default)")
        raise ValueError(f"from_nir: node {key!r} ({type(node).__name__}) has {tau} down to "
                         f"{smallest:.3g} s, and dt = {dt:g} s steps it by dt/{tau} = "
                         f"{float(factor.max()):.3g}: forward Euler needs dt/{tau} <= 1 (beyond "
                         f"it the membrane overshoots its rest state, beyond 2 it diverges). "
                         f"{hint}")


def _module(key: str, node, dt: float, exporter: str | None, looped: set, dtype) -> nn.Module:
    kind = type(node).__name__
    if kind in ("Input", "Output"):
        return nn.Identity()
    if kind == "Affine":
        return _linear(node, True, dtype)
    if kind == "Linear":
        return _linear(node, False, dtype)
    if kind == "Conv2d":
        return _conv2d(node, dtype)
    if kind == "Flatten":
        return _Flatten(int(node.start_dim), int(node.end_dim))
    if kind in ("SumPool2d", "AvgPool2d"):
        cls = _SumPool2d if kind == "SumPool2d" else nn.AvgPool2d
        return cls(_pair(node.kernel_size), _pair(node.stride), _pair(node.padding))
    if kind == "Scale":
        return _Elementwise("scale", _t(node.scale, dtype))
    if kind == "Threshold":
        return _Elementwise("threshold", _t(node.threshold, dtype))
    return _neuron(key, node, dt, exporter, looped, dtype)


def _flatten(graph) -> tuple[dict, list[tuple[str, str]]]:
    """Nodes and edges with nested graphs spliced in (``outer.inner`` keys)."""
    import nir

    nodes, edges, subgraphs = {}, [], {}
    for key, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            inner_nodes, inner_edges = _flatten(node)
            ins = [k for k, n in inner_nodes.items() if type(n).__name__ == "Input"]
            outs = [k for k, n in inner_nodes.items() if type(n).__name__ == "Output"]
            if len(ins) != 1 or len(outs) != 1:
                raise ValueError(f"from_nir: nested graph {key!r} has {len(ins)} input and "
                                 f"{len(outs)} output nodes: xbar needs one of each")
            nodes.update({f"{key}.{k}": n for k, n in inner_nodes.items()})
            edges += [(f"{key}.{a}", f"{key}.{b}") for a, b in inner_edges]
            subgraphs[key] = (f"{key}.{ins[0]}", f"{key}.{outs[0]}")
        else:
            nodes[key] = node
    for a, b in graph.edges:
        a = subgraphs[a][1] if a in subgraphs else a
        b = subgraphs[b][0] if b in subgraphs else b
        edges.append((a, b))
    return nodes, edges


def _order(keys: list[str], edges: list[tuple[str, str]], start: str) -> tuple[list[str], set]:
    """Nodes in execution order from ``start`` (depth first), and the edges that close a
    loop (they carry the previous step's value)."""
    succ = {k: [] for k in keys}
    for a, b in edges:
        succ[a].append(b)
    state, post, back = {}, [], set()

    def visit(u):  # iterative DFS: graphs can be deep
        stack = [(u, iter(succ[u]))]
        state[u] = "open"
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = "done"
                post.append(node)
                stack.pop()
            elif state.get(nxt) == "open":
                back.add((node, nxt))
            elif nxt not in state:
                state[nxt] = "open"
                stack.append((nxt, iter(succ[nxt])))

    visit(start)
    return post[::-1], back


class NIRNetwork(nn.Module):
    """A NIR graph run one timestep per call; ``reset()`` returns it to rest.

    ``nodes`` holds one module per graph node (keys with ``.`` written ``_``), so that
    :func:`xbar.convert` finds and swaps the weight nodes like any layer."""

    def __init__(self, nodes: dict, edges: list[tuple[str, str]], ends: tuple[str, str], dt: float,
                 dtype, exporter: str | None = None) -> None:
        super().__init__()
        self.dt, self.exporter = dt, exporter
        self.keys = {k: k.replace(".", "_") for k in nodes}
        self.input, self.output = ends
        self.order, self.back = _order(list(nodes), edges, self.input)
        unreached = [k for k in nodes if k not in self.order]
        if unreached:
            raise ValueError(f"from_nir: nodes {unreached} cannot be reached from the input node "
                             f"{self.input!r}")
        looped = {b for _, b in self.back}
        self.nodes = nn.ModuleDict({self.keys[k]: _module(k, n, dt, exporter, looped, dtype)
                                    for k, n in nodes.items()})
        self.sources = {k: [a for a, b in edges if b == k] for k in nodes}
        self._previous: dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        """Back to rest: every neuron's state and the values on loop edges."""
        self._previous = {}
        for m in self.nodes.values():
            if isinstance(m, _Neuron):
                m.reset()

    def _at_rest(self, key: str) -> torch.Tensor | None:
        """What a loop edge from node ``key`` carries at the first step: its output for the
        previous step's outputs at rest (zero spikes), i.e. a weight node's bias (as
        snntorch's RLeaky adds its recurrent layer's bias at the first step), else
        nothing (zero)."""
        module = self.nodes[self.keys[key]]
        bias = getattr(module, "bias", None)
        if not isinstance(bias, torch.Tensor):
            return None
        return bias[:, None, None] if isinstance(module, nn.Conv2d) else bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: dict[str, torch.Tensor] = {}
        for key in self.order:
            if key == self.input:
                value = x
            else:
                parts = [out[a] if (a, key) not in self.back else self._previous.get(a, self._at_rest(a))
                         for a in self.sources[key]]
                # every node has a forward input: the edge the depth-first search reached it by
                parts = [p for p in parts if p is not None]
                value = sum(parts[1:], parts[0])
            out[key] = self.nodes[self.keys[key]](value)
        self._previous = {a: out[a] for a, _ in self.back}
        return out[self.output]

    def extra_repr(self) -> str:
        steps = "NIR's" if self.exporter is None else f"{self.exporter}'s"
        unit = "step" if self.exporter == "sinabs" else "s"
        return f"dt={self.dt:g} {unit}, {steps} steps, {len(self.order)} nodes, {len(self.back)} recurrent edges"


def from_nir(graph, *, dt: float | None = None, exporter: str | None = None,
             dtype: torch.dtype = torch.float32) -> NIRNetwork:
    """A single-step torch network of the NIR graph ``graph`` (a ``nir.NIRGraph``, in
    memory as an exporter returns it, or the path of a file written by ``nir.write``),
    stepped by ``dt`` seconds per call.

    ``exporter``: the library that wrote the graph (one of :data:`EXPORTERS`), so that each neuron steps as that library's own update does where it
    differs from NIR's forward Euler (see the module docstring), and ``dt`` defaults to
    that library's export dt (:data:`EXPORTERS`).  ``None``: NIR's equations, and ``dt``
    must be given: NIR graphs do not record the step they were exported with, and a
    wrong ``dt`` silently changes every time constant.  A ``dt`` for which a forward-Euler
    step would overshoot (``dt/tau > 1``) is refused with the numbers.  Nodes of a kind
    not in :data:`SUPPORTED` are refused by name.
    """
    try:
        import nir
    except ImportError as err:  # pragma: no cover - nir is in the [frameworks] extra
        raise ImportError("from_nir needs the nir package: pip install nir "
                          "(or xbar[frameworks])") from err
    if exporter is not None and exporter not in EXPORTERS:
        raise ValueError(f"from_nir: exporter = {exporter!r} is not allowed: must be one of "
                         f"{sorted(EXPORTERS)}, or None (NIR's equations, with the dt you give)")
    if dt is None and exporter is None:
        raise TypeError("from_nir: dt is needed (the time step in seconds that the graph was exported "
                        "with: snntorch and SpikingJelly use 1e-4, norse 1e-3), or name the exporter "
                        f"(exporter= one of {sorted(EXPORTERS)}) for its own")
    if exporter in ("snntorch", "sinabs") and dt is not None and dt != EXPORTERS[exporter]:
        why = ("snntorch's export writes every time constant for dt = 1e-4 s, whatever the network ran at"
               if exporter == "snntorch" else "sinabs writes its time constants in steps (dt = 1 step)")
        raise ValueError(f"from_nir: dt = {dt!r} is not allowed with exporter={exporter!r}: {why}; leave dt out")
    if dt is not None and (isinstance(dt, bool) or not isinstance(dt, (int, float)) or not math.isfinite(dt)
                           or dt <= 0):
        raise ValueError(f"from_nir: dt = {dt!r} is not allowed: must be the time step in seconds, "
                         "> 0 (the one the graph was exported with: snntorch and SpikingJelly use "
                         "1e-4, norse 1e-3)")
    if dt is None and exporter != "rockpool":
        dt = EXPORTERS[exporter]
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"from_nir: dtype = {dtype} is not allowed: must be torch.float32 or float64")
    if isinstance(graph, (str, Path)):
        path = Path(graph)
        if not path.is_file():
            raise FileNotFoundError(f"from_nir: no NIR file at {str(path)!r}")
        # without NIR's type inference, which exporters' graphs often fail (sinabs's scalar time
        # constants, snntorch's conv shapes): the torch modules check every shape as they run
        graph = nir.read(str(path), type_check=False)
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"from_nir: graph must be a nir.NIRGraph or the path of a NIR file, got "
                        f"{type(graph).__name__}")
    nodes, edges = _flatten(graph)
    unsupported = sorted({f"{k} ({type(n).__name__})" for k, n in nodes.items()
                          if type(n).__name__ not in SUPPORTED})
    if unsupported:
        raise ValueError(f"from_nir: the graph holds nodes xbar cannot run: {', '.join(unsupported)}. "
                         f"Supported: {', '.join(SUPPORTED)}")
    ends = []
    for kind in (nir.Input, nir.Output):
        found = [k for k, n in graph.nodes.items() if isinstance(n, kind)]
        if len(found) != 1:
            raise ValueError(f"from_nir: the graph has {len(found)} {kind.__name__} nodes ({found}): "
                             "xbar runs graphs with exactly one")
        ends.append(found[0])
    unknown = sorted({e for edge in edges for e in edge if e not in nodes})
    if unknown:
        raise ValueError(f"from_nir: edges name nodes the graph does not have: {unknown}")
    _check_kinds(nodes, exporter)
    if exporter == "rockpool":
        dt = _rockpool_dt(nodes, dt)
    if exporter == "sinabs":
        warnings.warn(_SINABS_UNRECORDED, UserWarning, stacklevel=2)
    return NIRNetwork(nodes, edges, (ends[0], ends[1]), float(dt), dtype, exporter)


_SINABS_UNRECORDED = (
    "from_nir: sinabs's NIR export does not record its neurons' spike_fn, reset_fn, min_v_mem, "
    "norm_input or tau_syn. xbar steps them as sinabs does by default: MultiSpike (floor(v/threshold) "
    "spikes where v >= threshold) and MembraneSubtract; IAF floored at -threshold (as sinabs.from_model "
    "and sinabs.from_nir do); LIF with norm_input=True; ExpLeak with norm_input=False; no synaptic "
    "current. A network built with other settings reads otherwise: check one step of its sinabs run "
    "against xbar's (docs/frameworks.md).")
