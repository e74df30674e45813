"""A layer's crossbar matrix programmed onto tiles: Monte Carlo trials and tiles batched.

One :class:`ProgrammedMatrix` holds every tile of one layer for ``K`` trials (one trial
is one programming).  Programming variation, stuck-at faults and drift exponents are
drawn once, here; read noise is drawn anew at every read.

Read noise, exact in distribution at one extra matrix product: the devices of a
column fluctuate independently, ``G_ij (1 + s_ij eps_ij)``, so the noise of column
current ``j`` is Gaussian with variance ``sum_i v_i^2 (s_ij G_ij)^2``: one product of
``v**2`` with the precomputed ``(s G)**2``, then one normal draw per column read, instead
of one draw per device per read.

Speed, without changing any number a read returns (up to float rounding):

- only the columns that are read are kept (unused columns of a partly filled tile carry
  no output), after the circuit has been solved with all of them;
- the DAC scale, the ADC full scale and the weight scale are folded into the stored
  matrices, so a read is: one product (plus one for noise), the ADC rounding in place,
  and the digital combination;
- with an ideal ADC, a differential pair is one column of ``G+ - G-`` with noise
  variance ``s+^2 + s-^2`` (the difference of two independent Gaussian column noises),
  and all tile-rows are summed inside the same product.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from devices import drift, program, read_sigma_rel
from mapping.layout import layout_weights
from xbar.crossbar import effective_conductance
from xbar.converters import quantize_unit, to_codes_, top_code
from xbar.spec import Spec


def _side_by_side(t: torch.Tensor) -> torch.Tensor:
    """``(K, n_r, n_c, R, C) -> (K, n_r, R, n_c * C)``."""
    k, n_r, n_c, r, c = t.shape
    return t.permute(0, 1, 3, 2, 4).reshape(k, n_r, r, n_c * c)


def read_columns(scheme: str, n_out: int, n_c: int, cols: int, per_tile: int):
    """Which physical columns (indices into ``n_c * cols``) are read, and for each output
    the positions, among the read columns, of its column ``a`` and of ``b`` with
    ``output = a - b`` (the G- column, or the tile's reference column)."""
    keep, a, b = [], [], []
    for c in range(n_c):
        used = min(per_tile, n_out - c * per_tile)
        base = c * cols
        if scheme == "differential":
            for j in range(used):
                a.append(len(keep))
                keep.append(base + 2 * j)
                b.append(len(keep))
                keep.append(base + 2 * j + 1)
        else:
            ref = len(keep) + used
            for j in range(used):
                a.append(len(keep))
                keep.append(base + j)
                b.append(ref)
            keep.append(base + cols - 1)
    return torch.tensor(keep), torch.tensor(a), torch.tensor(b)


class ProgrammedMatrix(nn.Module):
    """Crossbar matrix ``w`` ``(in, out)`` programmed on tiles, ``trials`` times.

    ``g_tiles`` holds the effective conductances (S), ``(K, n_r, n_c, R, C)``; the
    buffers used by a read are derived from it once, at programming.
    """

    def __init__(self, w: torch.Tensor, spec: Spec, *, trials: int, program_seed: int,
                 read_seed: int) -> None:
        super().__init__()
        dev = spec.device
        layout = layout_weights(w.detach(), dev.g_min, dev.g_max, dev.levels, spec.tile, spec.mapping)
        self.spec, self.shape, self.scheme = spec, layout.shape, layout.scheme
        self.outputs_per_tile = layout.outputs_per_tile
        self.n_r, self.n_c = layout.grid
        self.rows, self.cols = layout.tile
        self.trials = trials
        self.read_seed = read_seed
        # weight units per ampere of column-difference current, for inputs in input units
        self.out_scale = layout.w_per_siemens * spec.input_range / spec.v_read
        self._read_gen: torch.Generator | None = None
        # An unsigned DAC cannot drive a negative voltage; with ideal converters the read is
        # exact for any sign, so only a path with a converter refuses negative inputs.
        self.refuse_negative = not spec.dac_signed and (spec.dac_bits is not None or spec.adc_bits is not None)

        gen = torch.Generator(device=w.device).manual_seed(program_seed)
        targets = layout.targets.unsqueeze(0).expand(trials, *layout.targets.shape).contiguous()
        g0 = program(targets, dev, gen)  # (K, n_r, n_c, R, C)
        g = drift(g0, spec.t_inference, dev, gen) if spec.t_inference > 0 else g0
        self.register_buffer("g_tiles", effective_conductance(g, spec))
        s2 = None
        if dev.has_read_noise:
            # First order with IR drop: each device's relative read noise on its entry of
            # the effective matrix (exactly the device-level noise with ideal wires).
            rel = torch.where(g > 0, read_sigma_rel(g, dev), torch.zeros_like(g))
            s2 = (rel * self.g_tiles) ** 2
        keep, a, b = read_columns(self.scheme, self.shape[1], self.n_c, self.cols, self.outputs_per_tile)
        if spec.adc_bits is None:
            self._setup_direct(layout.w_per_siemens, s2, keep, a, b)
        else:
            i_fs = spec.adc_range * spec.v_read * g0.sum(-2).amax(-1)  # (K, n_r, n_c), A
            self._setup_adc(i_fs.clamp_min(torch.finfo(g0.dtype).tiny), layout.w_per_siemens, s2, keep, a, b)

    def _setup_direct(self, w_per_siemens, s2, keep, a, b) -> None:
        """Ideal ADC: ``y = x @ g`` in weight units, every tile-row in one product."""
        k, m = self.trials, self.n_r * self.rows
        g = _side_by_side(self.g_tiles).reshape(k, m, -1)[..., keep][:, : self.shape[0]]
        s2 = None if s2 is None else _side_by_side(s2).reshape(k, m, -1)[..., keep][:, : self.shape[0]]
        if self.scheme == "differential":  # merge each pair: exact for ideal ADCs
            g = g[..., a] - g[..., b]
            s2 = None if s2 is None else s2[..., a] + s2[..., b]
            a = b = None
        self.register_buffer("g_read", (g * w_per_siemens).contiguous())
        self.register_buffer("s2_read", None if s2 is None else (s2 * w_per_siemens**2).contiguous())
        self.register_buffer("out_fs", None)
        self.register_buffer("col_a", a)
        self.register_buffer("col_b", b)

    def _setup_adc(self, i_fs, w_per_siemens, s2, keep, a, b) -> None:
        """Per-tile ADC: ``u = x @ g`` is the column current in units of its full scale."""
        spec = self.spec
        scale = (spec.v_read / spec.input_range) / i_fs[..., None, None]  # (K, n_r, n_c, 1, 1)
        self.register_buffer("g_read", _side_by_side(self.g_tiles * scale)[..., keep].contiguous())
        self.register_buffer("s2_read", None if s2 is None else
                             _side_by_side(s2 * scale**2)[..., keep].contiguous())
        block = torch.arange(self.shape[1]) // self.outputs_per_tile
        # Digital side: codes -> amperes -> weight units, per output and tile-row.
        fs = (i_fs[..., block] / top_code(spec.adc_bits, spec.adc_signed)
              * (w_per_siemens * spec.input_range / spec.v_read))
        self.register_buffer("out_fs", fs.unsqueeze(2).contiguous())  # (K, n_r, 1, out)
        self.register_buffer("col_a", a)
        self.register_buffer("col_b", b)

    def conductances(self) -> torch.Tensor:
        """Effective conductances as tiles ``(K, n_r, n_c, R, C)`` (S)."""
        return self.g_tiles

    def _generator(self, device: torch.device) -> torch.Generator:
        if self._read_gen is None or self._read_gen.device != device:
            self._read_gen = torch.Generator(device=device).manual_seed(self.read_seed)
        return self._read_gen

    def reset_read_noise(self) -> None:
        """Restart the read-noise stream from its seed."""
        self._read_gen = None

    def _add_noise(self, i: torch.Tensor, x: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
        """Column noise, in place: std from one product of ``x**2`` with the variances."""
        std = torch.matmul(x * x, s2).sqrt_()
        eps = torch.empty_like(i).normal_(generator=self._generator(i.device))
        return i.addcmul_(std, eps)

    def _decode(self, i: torch.Tensor) -> torch.Tensor:
        if self.col_a is None:
            return i
        if self.scheme == "differential":  # read columns are (G+, G-) pairs in output order
            return i[..., 0::2] - i[..., 1::2]
        return i.index_select(-1, self.col_a) - i.index_select(-1, self.col_b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(K, N, in)`` inputs -> ``(K, N, out)`` in weight units (``x @ w``)."""
        spec = self.spec
        if self.refuse_negative and float(x.min()) < 0:
            raise ValueError(f"crossbar read: an input of {float(x.min()):.4g} < 0 on an unsigned DAC "
                             f"(Spec.dac_signed=False), which would clip it: scale the inputs to "
                             f"[0, {spec.input_range:g}], or set Spec(dac_signed=True, adc_signed=True)")
        if spec.dac_bits is not None:
            x = quantize_unit(x / spec.input_range, spec.dac_bits, spec.dac_signed) * spec.input_range
        if self.out_fs is None:
            i = torch.matmul(x, self.g_read)
            if self.s2_read is not None:
                i = self._add_noise(i, x, self.s2_read)
            return self._decode(i)
        # Tile-rows that are full, then the partial last one with only its used rows: no
        # product over the zero padding (conv1 of a 3x3 kernel uses 9 of 64 rows).
        k, n, m = x.shape
        full, last = divmod(m, self.rows)
        y = None
        if full:
            xt = x[..., : full * self.rows].reshape(k, n, full, self.rows).transpose(1, 2).contiguous()
            y = self._adc_read(xt, slice(0, full))
        if last:
            part = self._adc_read(x[..., full * self.rows :].unsqueeze(1), slice(full, full + 1))
            y = part if y is None else y + part
        return y

    def _adc_read(self, xt: torch.Tensor, blocks: slice) -> torch.Tensor:
        """Read tile-rows ``blocks`` with inputs ``xt`` ``(K, n, N, r)`` (``r`` used rows):
        product, column noise, ADC per column, digital combination summed over the blocks."""
        r = xt.shape[-1]
        u = torch.matmul(xt, self.g_read[:, blocks, :r])  # column currents / full scale
        if self.s2_read is not None:
            u = self._add_noise(u, xt, self.s2_read[:, blocks, :r])
        codes = to_codes_(u, self.spec.adc_bits, self.spec.adc_signed)
        return (self._decode(codes) * self.out_fs[:, blocks]).sum(1)
