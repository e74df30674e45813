"""A layer's crossbar matrix programmed onto tiles: Monte Carlo trials and tiles batched.

One :class:`ProgrammedMatrix` holds every tile of one layer for ``K`` trials (one trial
is one programming).  Programming variation, stuck-at faults and drift exponents are
drawn once, here; read noise is drawn anew at every read.

Read noise, exact in distribution at one extra matrix product: the devices of a
column fluctuate independently, ``G_ij (1 + s_ij eps_ij)``, so the noise of column
current ``j`` is Gaussian with variance ``sum_i v_i^2 (s_ij G_ij)^2``: one product of
``v**2`` with the precomputed ``(s G)**2``, then one normal draw per column read, instead
of one draw per device per read.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from devices import drift, program, read_sigma
from mapping.layout import decode_columns, layout_weights
from xbar.circuit import effective_conductance
from xbar.converters import adc, dac
from xbar.spec import Spec


class ProgrammedMatrix(nn.Module):
    """Crossbar matrix ``w`` ``(in, out)`` programmed on tiles, ``trials`` times.

    Buffers (``K`` trials, ``n_r x n_c`` tiles of ``R x C``):
    ``g``: effective conductances (S), ``(K, n_r, R, n_c * C)`` (the columns of the
    tiles of one tile-row side by side, ready for one batched product);
    ``s2``: read-noise variances (S^2), same shape, or ``None``;
    ``i_fs``: ADC full scale per tile (A), ``(K, n_r, 1, n_c * C)``, or ``None``.
    """

    def __init__(self, w: torch.Tensor, spec: Spec, *, trials: int, program_seed: int,
                 read_seed: int) -> None:
        super().__init__()
        dev = spec.device
        layout = layout_weights(w.detach(), dev.g_min, dev.g_max, dev.levels, spec.tile, spec.mapping)
        self.spec = spec
        self.shape = layout.shape
        self.scheme = layout.scheme
        self.outputs_per_tile = layout.outputs_per_tile
        self.n_r, self.n_c = layout.grid
        self.rows, self.cols = layout.tile
        self.trials = trials
        self.out_scale = layout.w_per_siemens * spec.input_range / spec.v_read
        self.read_seed = read_seed
        self._read_gen: torch.Generator | None = None

        gen = torch.Generator(device=w.device).manual_seed(program_seed)
        targets = layout.targets.unsqueeze(0).expand(trials, *layout.targets.shape).contiguous()
        g0 = program(targets, dev, gen)  # (K, n_r, n_c, R, C)
        i_fs = None
        if spec.adc_bits is not None:
            i_fs = spec.adc_range * spec.v_read * g0.sum(-2).amax(-1)  # (K, n_r, n_c)
            i_fs = i_fs.clamp_min(torch.finfo(g0.dtype).tiny)
        g = drift(g0, spec.t_inference, dev, gen) if spec.t_inference > 0 else g0
        g_eff = effective_conductance(g)
        self.register_buffer("g", self._side_by_side(g_eff))
        self.register_buffer("s2", self._side_by_side(read_sigma(g, dev) ** 2)
                             if dev.has_read_noise else None)
        self.register_buffer("i_fs", None if i_fs is None else
                             i_fs.unsqueeze(-1).expand(*i_fs.shape, self.cols)
                             .reshape(trials, self.n_r, 1, self.n_c * self.cols).contiguous())

    @staticmethod
    def _side_by_side(t: torch.Tensor) -> torch.Tensor:
        """``(K, n_r, n_c, R, C) -> (K, n_r, R, n_c * C)``."""
        k, n_r, n_c, r, c = t.shape
        return t.permute(0, 1, 3, 2, 4).reshape(k, n_r, r, n_c * c).contiguous()

    def conductances(self) -> torch.Tensor:
        """Effective conductances as tiles ``(K, n_r, n_c, R, C)`` (S)."""
        k = self.trials
        return self.g.view(k, self.n_r, self.rows, self.n_c, self.cols).permute(0, 1, 3, 2, 4)

    def _generator(self, device: torch.device) -> torch.Generator:
        if self._read_gen is None or self._read_gen.device != device:
            self._read_gen = torch.Generator(device=device).manual_seed(self.read_seed)
        return self._read_gen

    def reset_read_noise(self) -> None:
        """Restart the read-noise stream from its seed."""
        self._read_gen = None

    def _noise(self, v: torch.Tensor, s2: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        std = torch.matmul(v * v, s2).sqrt_()
        eps = torch.randn(like.shape, generator=self._generator(like.device), device=like.device,
                          dtype=like.dtype)
        return std.mul_(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(K, N, in)`` inputs -> ``(K, N, out)`` in weight units (``x @ w``)."""
        spec = self.spec
        k, n, m = x.shape
        v = dac(x, v_read=spec.v_read, input_range=spec.input_range, bits=spec.dac_bits,
                signed=spec.adc_signed)
        pad = self.n_r * self.rows - m
        if pad:
            v = F.pad(v, (0, pad))
        o = self.outputs_per_tile
        if self.i_fs is None:
            # No ADC: the partial sums of the tile-rows add up in the same product.
            g = self.g.view(k, self.n_r * self.rows, self.n_c * self.cols)
            i = torch.matmul(v, g)
            if self.s2 is not None:
                i = i + self._noise(v, self.s2.view_as(g), i)
            y = decode_columns(i.view(k, n, self.n_c, self.cols), self.scheme, o)
        else:
            vt = v.view(k, n, self.n_r, self.rows).transpose(1, 2)  # (K, n_r, N, R)
            i = torch.matmul(vt, self.g)  # (K, n_r, N, n_c*C)
            if self.s2 is not None:
                i = i + self._noise(vt, self.s2, i)
            i = adc(i, self.i_fs, bits=spec.adc_bits, signed=spec.adc_signed)
            y = decode_columns(i.view(k, self.n_r, n, self.n_c, self.cols), self.scheme, o).sum(1)
        return y.reshape(k, n, self.n_c * o)[..., : self.shape[1]] * self.out_scale
