"""Calibration of a layer's tiles: what a deployed chip fits after programming, from its
own reads.

Each tile's outputs get a digital offset (what they read with every input off) and gain
(the least-squares gain that brings the reads closest to the ideal products of the same
inputs, :func:`calibration_gain`), per output and per tile-row (before the tile-rows'
partial sums are added).  With ``Spec.adc_percentile`` the ADC ranges are set from the
same reads first (:func:`percentile_levels`).  The fit sees the chip's own noisy,
quantized reads, drawn from the programming's generator, so that the read-noise stream
of the inference is untouched.  The inputs: known random vectors
(:func:`calibration_vectors`, ``Spec.calibration="vectors"``) or the inputs each layer
reads when a few samples of data run through the network (:func:`xbar.calibrate`).
"""

from __future__ import annotations

import torch

from xbar import kernels
from xbar.spec import Spec

# Known vectors read per calibration: the gain's relative error from read noise falls as
# one over the square root of this.
CAL_VECTORS = 512
# Inputs kept per read while recording a calibration batch (a random subset of its rows),
# and at most in one fit.
CAL_ROWS_PER_READ = 512
# Reads with every input off, averaged into each output's offset.
CAL_ZERO_READS = 64
CAL_MAX_ROWS = 4096
# Calibration inputs kept as the global drift compensation's reference batch
# (Spec.drift_compensation): its mean output magnitude is read at calibration and again at
# inference; over 64 inputs and every output, the read noise of the ratio is small.
CAL_REFERENCE_ROWS = 64
# Numbers per tensor of a calibration fit (trials x inputs x tile-rows x read columns), at
# most: the trials are fitted in chunks of this size (a 5-trial study fits in one), and
# where one trial is larger, its tile-rows are (a 4096x1024 layer on 32x32 tiles); fewer
# where the memory budget asks (CAL_FIT_TENSORS such tensors within xbar.memory.READ_SHARE).
CAL_FIT_ELEMENTS = 2**25
# Tensors of a fit's size alive at once, about: the read's current, noise variance and ADC
# temporaries, its decoded and scaled output, the last part's reads kept, the ideal sums,
# the moments' products, the ADC ranges' percentiles, and the heap's gaps between them.
# Measured on VGG9's layers (4,100 inputs, 64x64 tiles, 4-bit ADCs, ranges from the data):
# 0.55 to 0.89 GiB above what was resident when 8 were counted within 0.6 GiB, up to 13.
CAL_FIT_TENSORS = 8
def sample_rows(x: torch.Tensor, gen: torch.Generator, most: int) -> torch.Tensor:
    """At most ``most`` of the ``N`` inputs of a read ``(K, N, in)``, at random (``x``
    itself when it has no more)."""
    n = x.shape[1]
    if n <= most:
        return x.detach()
    pick = torch.randperm(n, generator=gen, device=gen.device)[:most].to(x.device)
    return x[:, pick].detach()


def calibration_gain(y: torch.Tensor, t: torch.Tensor, lsb: torch.Tensor | None = None,
                     tile_of: torch.Tensor | None = None) -> torch.Tensor:
    """The digital gain ``g`` ``(K, n_r, out)`` for offset-free reads ``y`` of ideal
    products ``t`` (vectors on axis 2): the least-squares ``g`` of ``t ~ g y`` through the
    origin, ``sum(t y) / sum(y^2)``, the gain that brings the calibration reads closest to
    the ideal products (mean square), so a calibrated read is never further from them
    than the raw one on the calibration data.  A crossbar reads 0 for no input, so the
    line has no intercept (a constant on every read is a bias that the membranes of an
    SNN integrate at every step).  Where the reads are an attenuation ``a`` and an error
    ``e`` uncorrelated with the products, ``g = a / (a^2 + E e^2 / E t^2)``: exactly
    ``1/a`` without error, less where the error is large, which does not amplify an error
    as much as the signal (measured on 128x128 tiles with IR drop, where the unbiased
    ``1/a`` cost up to 8 points against raw: docs/hardware.md#calibration).  ``g`` is
    capped at 10.

    An output's own gain is fitted where its products' RMS spans at least
    :data:`RESOLVED_CODES` ADC codes (``lsb``: one code per output and tile-row, in the
    units of ``t``): below, its reads are mostly rounding (a sparse output whose products
    fall within one code reads 0 whatever they are).  Such an output takes the gain of its
    tile (``tile_of``: the tile of each output; default one tile), fitted over all the
    tile's outputs, when those span enough codes together: a tile's columns share its
    wires, so their attenuations are alike, and an output left at gain 1 beside corrected
    neighbours would be scaled unlike them (measured: that mismatch between the classes of
    an output layer cost 8 points).  Where the tile does not resolve either, the output
    takes the gain fitted over every tile of the layer (all tiles are the same circuit),
    when the products that carry that fit (weighted by their square, as the fit weighs
    them) span enough codes: sparse inputs leave most tile-rows under 4 codes, and a
    layer whose few resolved tile-rows were boosted while the rest stayed at 1 lost 1.3
    points against the raw chip (the converted MLP on 64x64 tiles at 2.5 ohm/cell); with
    the layer's gain it gained 1.7.  Outputs with no products keep gain 1."""
    sums, n = read_sums(y, t)
    return gain_from_moments(moments_about(sums, n), lsb, tile_of).to(y.dtype)


def read_sums(y: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """What :func:`calibration_gain` needs of reads ``y`` and products ``t`` ``(K, n_r, N,
    out)``, summed over the ``N`` vectors in float64: the sums of ``t^2``, ``t y``, ``y^2``,
    ``t^4``, ``t`` and ``y``, ``(6, K, n_r, out)``, and ``N``.  Per tile-row, so that a
    layer's tile-rows can be read in parts and their sums joined along axis 2; raw, so that
    the reads' offset can be taken out afterwards (:func:`moments_about`), and a part need
    not be kept or read again until the offset is read.  On the CPU, one native pass
    (:func:`xbar.kernels.read_sums`); else torch's, in float64."""
    k, n_r, n, m = y.shape
    if y.device.type == "cpu" and t.device.type == "cpu" and not (y.requires_grad or t.requires_grad) \
            and y.dtype == t.dtype and y.dtype in (torch.float32, torch.float64):
        out = torch.zeros(6, k * n_r, m, dtype=torch.float64)
        kernels.follow_torch_threads()
        kernels.read_sums(y.reshape(k * n_r, n, m).contiguous().numpy(),
                          t.reshape(k * n_r, n, m).contiguous().numpy(), out.numpy())
        return out.view(6, k, n_r, m), n
    y, t = y.double(), t.double()
    t2 = t * t
    return torch.stack([t2.sum(2), (t * y).sum(2), (y * y).sum(2), (t2 * t2).sum(2), t.sum(2), y.sum(2)]), n


def moments_about(sums: torch.Tensor, n: int, y0: torch.Tensor | None = None) -> tuple:
    """The means over the vectors of ``t^2``, ``t (y - y0)``, ``(y - y0)^2`` and ``t^4``
    (each ``(K, n_r, out)``, float64) from :func:`read_sums`' ``sums`` of ``n`` vectors:
    the moments of the reads less their offset ``y0`` ``(K, n_r, out)`` (none: 0).  Where
    the reads vary less than float64 resolves about ``y0`` (every read at the offset),
    ``t (y - y0)`` and ``(y - y0)^2`` are 0, as the reads less their offset would give."""
    tt, ty, yy, t4, t1, y1 = (s / n for s in sums)
    if y0 is None:
        return tt, ty, yy, t4
    y0 = y0.to(torch.float64)
    ty_c = ty - y0 * t1
    yy_c = yy - 2 * y0 * y1 + y0 * y0
    # The rounding of the expansions: a few units of float64's last place of their terms.
    eps = 16 * torch.finfo(torch.float64).eps
    resolved = yy_c > eps * (yy + 2 * (y0 * y1).abs() + y0 * y0)
    return tt, torch.where(resolved, ty_c, 0.0), torch.where(resolved, yy_c, 0.0), t4


def gain_from_moments(moments: tuple, lsb: torch.Tensor | None = None,
                      tile_of: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`calibration_gain` from the :func:`moments_about` of every tile-row."""
    tt, ty, yy, t4 = moments
    has = (tt > 0) & (yy > 0)

    def fit(ty, yy):
        return (ty / yy.clamp_min(torch.finfo(yy.dtype).tiny)).clamp(0.0, 10.0)

    if lsb is None:
        return torch.where(has, fit(ty, yy), torch.ones_like(tt))
    own = has & (tt >= (RESOLVED_CODES * lsb) ** 2)
    if tile_of is None:
        tile_of = torch.zeros(tt.shape[-1], dtype=torch.long, device=tt.device)
    n_tiles = int(tile_of.max()) + 1

    def tiles(a):  # (K, n_r, out) -> sums over each tile's outputs (K, n_r, tiles)
        return a.new_zeros(*a.shape[:-1], n_tiles).index_add_(-1, tile_of, a)

    def layer(a):  # (K, n_r, out) -> sums over every tile of the layer, (K, 1, 1)
        return a.sum((1, 2), keepdim=True)

    # The layer's fit weighs each read by its product squared, so it rests on the large
    # products: resolved when those (the t^2-weighted mean square, in codes) span enough.
    c2, c4 = tt / lsb**2, t4 / lsb**4
    layer_ok = layer(c4) >= RESOLVED_CODES**2 * layer(c2)
    fallback = torch.where(layer_ok & has, fit(layer(ty), layer(yy)).expand_as(tt), torch.ones_like(tt))
    pooled_ok = (tiles(tt) >= RESOLVED_CODES**2 * tiles(lsb**2))[..., tile_of]
    shared = torch.where(pooled_ok & has, fit(tiles(ty), tiles(yy))[..., tile_of], fallback)
    return torch.where(own, fit(ty, yy), shared)


# The RMS of a tile-row's ideal products, in ADC codes, below which its gain is not
# fitted (see calibration_gain).
RESOLVED_CODES = 4.0


def calibration_vectors(n_in: int, spec: Spec, trials: int, gen: torch.Generator,
                        like: torch.Tensor) -> torch.Tensor:
    """Known inputs ``(trials, CAL_VECTORS, n_in)``: binary, at full scale (exact on any
    DAC), each with its own activity drawn uniformly in ``(0, 1)``, so that the fit spans
    sparse and dense reads; signed (random signs) when the DAC is."""
    rate = torch.rand(CAL_VECTORS, 1, generator=gen, device=like.device, dtype=like.dtype)
    u = torch.rand(CAL_VECTORS, n_in, generator=gen, device=like.device, dtype=like.dtype)
    x = (u < rate).to(like.dtype) * spec.input_range
    if spec.dac_signed:
        sign = torch.rand(x.shape, generator=gen, device=like.device, dtype=like.dtype) < 0.5
        x = torch.where(sign, -x, x)
    return x.unsqueeze(0).expand(trials, *x.shape)


def range_groups(spec: Spec, analog_pairs: bool, read_tiles: torch.Tensor, output_tiles: torch.Tensor):
    """Which ADCs share a range (``Spec.range_scope``): the group of each read column and
    of each output, and the number of groups.  ``"tile"``: every column of a tile;
    ``"column"``: each output's own (the two columns of a pair with digital subtraction
    share it, so that their codes still subtract)."""
    if spec.range_scope == "tile":
        return read_tiles, output_tiles, int(read_tiles.max()) + 1
    n_out = output_tiles.numel()
    outputs = torch.arange(n_out, device=output_tiles.device)
    return (outputs if analog_pairs else outputs.repeat_interleave(2)), outputs, n_out


def quantile(u: torch.Tensor, q: float, dim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torch.quantile(u.to(dtype), q, dim)`` (linear interpolation; ``dtype`` default
    ``u``'s), bit for bit, from the top ranks alone where ``q`` is high: ``torch.topk`` of
    the ``n - floor(q (n - 1))`` largest values of ``u`` itself (widening a float keeps
    its order) and the same ``lerp`` in ``dtype`` of the two ranks around ``q (n - 1)``,
    which costs a fraction of the full sort ``torch.quantile`` does (15x less at the
    99.9th percentile of 80,000 reads), and no widened copy of ``u``."""
    dtype = dtype or u.dtype
    n = u.shape[dim]
    h = q * (n - 1)
    below = int(h // 1)
    k = n - below
    if 4 * k > n:
        return torch.quantile(u.to(dtype), q, dim=dim)
    top = torch.topk(u, k, dim=dim, largest=True, sorted=True).values  # descending
    lo, hi = top.select(dim, k - 1).to(dtype), top.select(dim, max(k - 2, 0)).to(dtype)
    return torch.lerp(lo, hi, torch.tensor(h - below, dtype=dtype, device=u.device))


def percentile_levels(u: torch.Tensor, groups: torch.Tensor, n_groups: int, spec: Spec) -> torch.Tensor:
    """Each group of ADCs' full scale (:func:`range_groups`) at the
    ``Spec.adc_percentile``-th percentile of the column current magnitudes ``u`` ``(K, n_r,
    N, read columns)`` that calibration inputs drew in it, times ``adc_range``, in the units
    of ``u``: ``(K, n_r, n_groups)``.  With one range per output, a pair's range is the
    larger of its two columns' percentiles.  A group that drew no current keeps its range
    (1)."""
    q = spec.adc_percentile / 100
    if spec.range_scope == "column":
        per_column = quantile(u, q, dim=-2, dtype=torch.float64)  # (K, n_r, read columns)
        level = per_column.new_zeros(*per_column.shape[:-1], n_groups).scatter_reduce_(
            -1, groups.expand_as(per_column), per_column, "amax", include_self=False)
        return torch.where(level > 0, level * spec.adc_range, torch.ones_like(level)).to(u.dtype)
    levels = []
    for c in range(n_groups):
        cols = (groups == c).nonzero().squeeze(1)
        level = quantile(u[..., cols].flatten(2), q, dim=-1, dtype=torch.float64)
        levels.append(torch.where(level > 0, level * spec.adc_range, torch.ones_like(level)).to(u.dtype))
    return torch.stack(levels, -1)
