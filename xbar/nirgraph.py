"""``from_nir(graph, dt=..., exporter=...)``: a NIR graph as a single-step torch network.

NIR (the Neuromorphic Intermediate Representation) describes a network as a graph of
continuous-time primitives; snntorch, SpikingJelly, norse and others export to it.  This
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

Edges that close a loop (recurrent weights) carry the previous step's output; at the
first step, what their source gives for outputs at rest: a weight node's bias, else zero.  Nested graphs are flattened into their parent.  A graph must have one
input and one output node.
"""

from __future__ import annotations

import math
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
    """State ``mem`` (and ``syn``), reset to rest by ``reset()``; ``exporter``: whose
    discrete update it follows where the libraries differ (``None``: NIR's)."""

    def __init__(self, params: dict[str, torch.Tensor], exporter: str | None = None) -> None:
        super().__init__()
        for name, value in params.items():
            self.register_buffer(name, value)
        self.exporter = exporter
        self.mem: torch.Tensor | None = None
        self.syn: torch.Tensor | None = None
        self.fired: torch.Tensor | None = None  # a late reset: last step's spikes, reset now
        self.late_reset = False  # snntorch's Synaptic, RLeaky and RSynaptic (see _fire)

    def reset(self) -> None:
        self.mem = None
        self.syn = None
        self.fired = None

    def _rest(self, x: torch.Tensor) -> torch.Tensor:
        leak = getattr(self, "v_leak", None)
        return torch.zeros_like(x) if leak is None else leak.to(x.dtype).expand_as(x).clone()

    def _fire(self) -> torch.Tensor:
        reset = self.v_reset.to(self.mem.dtype).expand_as(self.mem)
        if self.late_reset:  # the step after a spike: the membrane, this step's input in it, reset
            if self.fired is not None:
                self.mem = torch.where(self.fired, reset, self.mem)
            self.fired = self.mem > self.threshold
            return self.fired.to(self.mem.dtype)
        z = (self.mem > self.threshold).to(self.mem.dtype)
        self.mem = torch.where(z > 0, reset, self.mem)
        return z


class NIRLIF(_Neuron):
    def forward(self, x):
        v = self._rest(x) if self.mem is None else self.mem
        self.mem = v + self.dt_tau * (self.v_leak - v + self.r * x)
        return self._fire()


class NIRLI(_Neuron):
    def forward(self, x):
        v = self._rest(x) if self.mem is None else self.mem
        self.mem = v + self.dt_tau * (self.v_leak - v + self.r * x)
        return self.mem


class NIRCubaLIF(_Neuron):
    spiking = True

    def forward(self, x):
        i = torch.zeros_like(x) if self.syn is None else self.syn
        v = self._rest(x) if self.mem is None else self.mem
        if self.exporter == "norse":  # the input jumps into i, the membrane sees it, then i decays
            j = i + self.w_in * x
            self.mem = v + self.dt_tau_mem * (self.v_leak - v + self.r * j)
            self.syn = j - self.dt_tau_syn * j
        else:
            self.syn = i + self.dt_tau_syn * (self.w_in * x - i)
            self.mem = v + self.dt_tau_mem * (self.v_leak - v + self.r * self.syn)
        return self._fire() if self.spiking else self.mem


class NIRCubaLI(NIRCubaLIF):
    spiking = False


class NIRIF(_Neuron):
    def forward(self, x):
        v = self._rest(x) if self.mem is None else self.mem
        self.mem = v + self.dt_r * x
        return self._fire()


class NIRIntegrator(_Neuron):
    def forward(self, x):
        v = self._rest(x) if self.mem is None else self.mem
        self.mem = v + self.dt_r * x
        return self.mem


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


def _neuron_params(key: str, node, dt: float, exporter: str | None, dtype) -> dict[str, torch.Tensor]:
    kind = type(node).__name__
    factors = _step_factors(node, dt, exporter)
    _check_steps(key, node, factors, dt, exporter)
    p = {name: _t(value, dtype) for name, value in factors.items()}
    if kind in ("CubaLIF", "CubaLI"):
        p["w_in"] = _t(node.w_in, dtype)
    if kind not in ("IF", "I"):
        p["r"] = _t(node.r, dtype)
        p["v_leak"] = _t(node.v_leak, dtype)
    if kind in ("LIF", "CubaLIF", "IF"):
        p["threshold"] = _t(node.v_threshold, dtype)
        p["v_reset"] = _t(node.v_reset if node.v_reset is not None else np.zeros_like(_np(node.v_threshold)), dtype)
    return p


# How each exporter's step relates the graph's time constants to its own update, where it
# is not NIR's forward Euler at the export's dt: norse writes tau = dt / tau_inv, so its
# step factor dt * tau_inv is dt**2 / tau, and its IF adds the input as it is (no dt).
EXPORTERS = {"snntorch": 1e-4, "spikingjelly": 1e-4, "norse": 1e-3}  # each one's export dt (s)


def _step_factors(node, dt: float, exporter: str | None) -> dict[str, np.ndarray]:
    """The factors of a neuron node's step: ``dt/tau`` (``dt_tau``, ``dt_tau_syn``,
    ``dt_tau_mem``) and ``dt r`` (``dt_r``), as its exporter steps it."""
    kind = type(node).__name__
    step = dt * dt if exporter == "norse" else dt
    taus = {"LIF": {"dt_tau": "tau"}, "LI": {"dt_tau": "tau"},
            "CubaLIF": {"dt_tau_syn": "tau_syn", "dt_tau_mem": "tau_mem"},
            "CubaLI": {"dt_tau_syn": "tau_syn", "dt_tau_mem": "tau_mem"}}.get(kind, {})
    factors = {name: step / _np(getattr(node, tau)).astype(np.float64) for name, tau in taus.items()}
    if kind in ("IF", "I"):
        factors["dt_r"] = (1.0 if exporter == "norse" else dt) * _np(node.r).astype(np.float64)
    return factors


def _check_steps(key: str, node, factors: dict[str, np.ndarray], dt: float, exporter: str | None) -> None:
    """Refuse a step that forward Euler cannot take faithfully: ``dt/tau > 1`` overshoots
    the rest state (beyond 2 it diverges), so the graph would run another network."""
    for name, factor in factors.items():
        if name == "dt_r" or factor.size == 0 or float(factor.max()) <= 1.0:
            continue
        tau = name.replace("dt_", "")
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


_NEURONS = {"LIF": NIRLIF, "LI": NIRLI, "CubaLIF": NIRCubaLIF, "CubaLI": NIRCubaLI, "IF": NIRIF,
            "I": NIRIntegrator}


def _module(key: str, node, dt: float, exporter: str | None, dtype) -> nn.Module:
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
    return _NEURONS[kind](_neuron_params(key, node, dt, exporter, dtype), exporter)


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
        self.nodes = nn.ModuleDict({self.keys[k]: _module(k, n, dt, exporter, dtype) for k, n in nodes.items()})
        self.input, self.output = ends
        self.order, self.back = _order(list(nodes), edges, self.input)
        unreached = [k for k in nodes if k not in self.order]
        if unreached:
            raise ValueError(f"from_nir: nodes {unreached} cannot be reached from the input node "
                             f"{self.input!r}")
        self.sources = {k: [a for a, b in edges if b == k] for k in nodes}
        self._previous: dict[str, torch.Tensor] = {}
        if exporter == "snntorch":  # its late resets: Synaptic (CubaLIF), RLeaky (a LIF on a loop)
            looped = {b for _, b in self.back}
            for key, node in nodes.items():
                kind = type(node).__name__
                if kind == "CubaLIF" or (kind == "LIF" and key in looped):
                    self.nodes[self.keys[key]].late_reset = True

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
        return f"dt={self.dt:g} s, {steps} steps, {len(self.order)} nodes, {len(self.back)} recurrent edges"


def from_nir(graph, *, dt: float | None = None, exporter: str | None = None,
             dtype: torch.dtype = torch.float32) -> NIRNetwork:
    """A single-step torch network of the NIR graph ``graph`` (a ``nir.NIRGraph``, in
    memory as an exporter returns it, or the path of a file written by ``nir.write``),
    stepped by ``dt`` seconds per call.

    ``exporter``: the library that wrote the graph (``"snntorch"``, ``"spikingjelly"``,
    ``"norse"``), so that each neuron steps as that library's own update does where it
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
                        "(exporter='snntorch', 'spikingjelly' or 'norse') for its own")
    dt = EXPORTERS[exporter] if dt is None else dt
    if exporter == "snntorch" and dt != EXPORTERS["snntorch"]:
        raise ValueError(f"from_nir: dt = {dt!r} is not allowed with exporter='snntorch': snntorch's "
                         "export writes every time constant for dt = 1e-4 s, whatever the network ran at; "
                         "leave dt out")
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not math.isfinite(dt) or dt <= 0:
        raise ValueError(f"from_nir: dt = {dt!r} is not allowed: must be the time step in seconds, "
                         "> 0 (the one the graph was exported with: snntorch and SpikingJelly use "
                         "1e-4, norse 1e-3)")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"from_nir: dtype = {dtype} is not allowed: must be torch.float32 or float64")
    if isinstance(graph, (str, Path)):
        path = Path(graph)
        if not path.is_file():
            raise FileNotFoundError(f"from_nir: no NIR file at {str(path)!r}")
        graph = nir.read(str(path))
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
    return NIRNetwork(nodes, edges, (ends[0], ends[1]), float(dt), dtype, exporter)
