"""Native kernels (numba, compiled once and cached on disk): the per-read noise, and the
simulator's sums of squared errors and spike counts (one pass over each layer's outputs).

A counter-based generator: the ``n``-th number of the stream keyed ``key`` is
``mix(key + n * GAMMA)``, SplitMix64's output function (Steele, Lea & Flood, OOPSLA 2014;
it passes BigCrush) on the ``n``-th state of the SplitMix64 stream seeded ``key``.  A
number depends on its key and its position only, never on which thread draws it, so the
draws are bit-identical whatever the thread count, and the positions are filled in
parallel.

A standard normal from one number: the ziggurat of Marsaglia & Tsang (J. Stat. Softw. 5(8),
2000) with 256 layers, as numpy's ``random_standard_normal`` lays out a 64-bit number
(8 bits for the layer, one for the sign, 52 for the abscissa, so that the layer and the
value are independent: Doornik 2005).  99% of the numbers are one table look-up and one
comparison; the rest take further numbers of the same position's chain (``mix`` of the
previous one) and are exact by rejection, the tail beyond ``R`` by Marsaglia's
exponential method.  Its support is ``|eps| < 12.2``: ``R + x`` with ``x**2 < 2 y``, ``y``
at most ``52 ln 2`` (the exponential of the largest 52-bit uniform).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

GAMMA = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's increment (the golden ratio)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S1, _S8, _S9, _S12, _S30, _S27, _S31 = (np.uint64(n) for n in (1, 8, 9, 12, 30, 27, 31))
_LOW52 = np.uint64((1 << 52) - 1)
_TWO_M52 = 2.0**-52

_JIT = dict(nogil=True, cache=True, error_model="numpy")
# Sums that may be reassociated (so that they vectorise): float64 accumulators of float32
# or float64 terms, whose order changes nothing above float64's rounding.
_SUMS = dict(_JIT, fastmath={"reassoc"})


def _ziggurat_tables(r: float = 3.6541528853610088, v: float = 0.00492867323399) -> tuple:
    """Marsaglia & Tsang's tables for 256 layers of equal area ``v`` above the base strip
    (whose tail starts at ``r``), for 52-bit abscissae: the acceptance bounds ``ki``, the
    widths per unit ``wi`` and the densities ``fi`` at the layers' edges."""
    m = 2.0**52
    ki, wi, fi = np.zeros(256, np.int64), np.zeros(256), np.zeros(256)
    dn = tn = r
    q = v / math.exp(-0.5 * dn * dn)
    ki[0], ki[1] = int(dn / q * m), 0
    wi[0], wi[255] = q / m, dn / m
    fi[0], fi[255] = 1.0, math.exp(-0.5 * dn * dn)
    for i in range(254, 0, -1):
        dn = math.sqrt(-2.0 * math.log(v / dn + math.exp(-0.5 * dn * dn)))
        ki[i + 1] = int(dn / tn * m)
        tn = dn
        fi[i], wi[i] = math.exp(-0.5 * dn * dn), dn / m
    return r, ki, wi, fi


_R, _KI, _WI, _FI = _ziggurat_tables()


@numba.njit(inline="always", **_JIT)
def _mix(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@numba.njit(inline="always", **_JIT)
def _open(h):
    """A uniform in ``[2**-53, 1 - 2**-53]`` from the top 52 bits of ``h``."""
    return (float(np.int64(h >> _S12)) + 0.5) * _TWO_M52


@numba.njit(**_JIT)
def _slow(h, idx, rabs, x):
    """The ziggurat's rare cases for the number ``h`` (layer ``idx``, abscissa bits
    ``rabs``, candidate ``x``): the tail beyond ``R`` (layer 0) or the wedge of layer
    ``idx``, by rejection on the numbers that follow ``h`` in its chain."""
    while True:
        if idx == 0:
            while True:
                h = _mix(h + GAMMA)
                xx = -math.log(_open(h)) / _R
                h = _mix(h + GAMMA)
                yy = -math.log(_open(h))
                if yy + yy > xx * xx:
                    return -(_R + xx) if x < 0.0 else _R + xx  # the candidate's sign bit
        h = _mix(h + GAMMA)
        if (_FI[idx - 1] - _FI[idx]) * _open(h) + _FI[idx] < math.exp(-0.5 * x * x):
            return x
        h = _mix(h + GAMMA)  # a new candidate
        idx = np.int64(h & np.uint64(255))
        rabs = np.int64((h >> _S9) & _LOW52)
        x = float(rabs) * _WI[idx]
        if (h >> _S8) & _S1:
            x = -x
        if rabs < _KI[idx]:
            return x


@numba.njit(inline="always", **_JIT)
def normal_at(key, n):
    """The standard normal at position ``n`` of stream ``key`` (uint64 both)."""
    h = _mix(key + n * GAMMA)
    idx = np.int64(h & np.uint64(255))
    rabs = np.int64((h >> _S9) & _LOW52)
    x = float(rabs) * _WI[idx] * (1.0 - 2.0 * float(np.int64((h >> _S8) & _S1)))  # the sign without a branch
    if rabs < _KI[idx]:
        return x
    return _slow(h, idx, rabs, x)


def follow_torch_threads() -> None:
    """Run the kernels on as many threads as torch (``torch.set_num_threads``), within
    numba's pool."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


# Positions per parallel block: a block's trial and first position are found once.
_BLOCK = 4096


@numba.njit(inline="always", **_JIT)
def _block(b, blocks, m):
    """Parallel block ``b`` of a ``(K, M)`` fill in ``blocks`` blocks per row: its row and
    its positions ``start .. stop - 1``."""
    k = b // blocks
    start = (b - k * blocks) * _BLOCK
    return k, start, min(m, start + _BLOCK)


@numba.njit(parallel=True, **_JIT)
def fill_normal(out, keys, offsets):
    """``out[k, j]``: the normal at position ``offsets[k] + j`` of stream ``keys[k]``.
    ``out`` ``(K, M)`` float32 or float64, C-contiguous; ``keys``, ``offsets`` uint64 ``(K,)``."""
    k_count, m = out.shape
    blocks = (m + _BLOCK - 1) // _BLOCK
    for b in numba.prange(k_count * blocks):
        k, start, stop = _block(b, blocks, m)
        key, first = keys[k], offsets[k]
        for j in range(start, stop):
            out[k, j] = normal_at(key, first + np.uint64(j))


@numba.njit(parallel=True, **_JIT)
def noisy_read_(u, var, keys, offsets, lo, top):
    """In place, one pass: ``u[k, j] + sqrt(var[k, j]) * eps``, ``eps`` the normal at
    position ``offsets[k] + j`` of stream ``keys[k]`` (as :func:`fill_normal` draws it),
    computed in float64 and stored in ``u``'s width; where ``top > 0`` then clipped to
    ``[lo, 1]`` (units of full scale) and rounded to the ADC's codes ``* top``, half to
    even (:func:`xbar.tile.converters.to_codes_`).  ``u``, ``var`` ``(K, M)`` of one
    float width, C-contiguous; ``keys``, ``offsets`` uint64 ``(K,)``."""
    k_count, m = u.shape
    blocks = (m + _BLOCK - 1) // _BLOCK
    for b in numba.prange(k_count * blocks):
        k, start, stop = _block(b, blocks, m)
        key, first = keys[k], offsets[k]
        for j in range(start, stop):
            v = np.float64(u[k, j]) + math.sqrt(np.float64(var[k, j])) * normal_at(key, first + np.uint64(j))
            if top > 0.0:
                v = np.rint(min(max(v, lo), 1.0) * top)
            u[k, j] = v


@numba.njit(inline="always", **_JIT)
def _sample_row(r, n_count):
    """Row ``r`` of a ``(K, N, M)`` array's ``K * N`` sample rows: its trial and sample."""
    k = r // n_count
    return k, r - k * n_count


@numba.njit(parallel=True, **_SUMS)
def output_sums(ya, ref, yi, bias, out):
    """Per sample row ``r = k * N + n`` of a layer's outputs, in float64: ``out[r]`` =
    (sum of ``(ya - ref)**2``, of ``(ya - yi)**2``, of ``(ref - bias)**2``, and, for
    ``k = 0`` only, of ``(yi - bias)**2``).  ``ya``, ``ref`` ``(K, N, M)``; ``yi`` ``(N, M)``
    (one trial's samples, broadcast over the trials); ``bias`` ``(M,)`` (zeros for a layer
    without one); ``out`` ``(K * N, 4)`` float64.  Per row, so that the sums are the same
    whatever the thread count."""
    k_count, n_count, m = ya.shape
    for r in numba.prange(k_count * n_count):
        k, n = _sample_row(r, n_count)
        s0 = s1 = s2 = s3 = 0.0
        for j in range(m):
            a, f, i, b = np.float64(ya[k, n, j]), np.float64(ref[k, n, j]), np.float64(yi[n, j]), np.float64(bias[j])
            s0 += (a - f) * (a - f)
            s1 += (a - i) * (a - i)
            s2 += (f - b) * (f - b)
        if k == 0:
            for j in range(m):
                d = np.float64(yi[n, j]) - np.float64(bias[j])
                s3 += d * d
        out[r, 0], out[r, 1], out[r, 2], out[r, 3] = s0, s1, s2, s3


@numba.njit(parallel=True, **_SUMS)
def spike_sums(sa, si, out):
    """Per sample row ``r = k * N + n``: ``out[r]`` = (the analog spikes' sum, the count of
    neurons whose spike differs from the ideal one, and, for ``k = 0`` only, the ideal
    spikes' sum and the count of ideal outputs neither 0 nor 1).  ``sa`` ``(K, N, M)``,
    ``si`` ``(N, M)``, ``out`` ``(K * N, 4)`` float64."""
    k_count, n_count, m = sa.shape
    for r in numba.prange(k_count * n_count):
        k, n = _sample_row(r, n_count)
        s0 = s1 = s2 = s3 = 0.0
        for j in range(m):
            a, i = np.float64(sa[k, n, j]), np.float64(si[n, j])
            s0 += a
            s1 += 1.0 if a != i else 0.0
        if k == 0:
            for j in range(m):
                i = np.float64(si[n, j])
                s2 += i
                s3 += 0.0 if (i == 0.0 or i == 1.0) else 1.0
        out[r, 0], out[r, 1], out[r, 2], out[r, 3] = s0, s1, s2, s3


@numba.njit(parallel=True, **_SUMS)
def squared_differences(a, b, out):
    """Per sample row ``r = k * N + n``: ``out[r]`` = sum of ``(a[k, n] - b[n])**2`` in
    float64.  ``a`` ``(K, N, M)``, ``b`` ``(N, M)``, ``out`` ``(K * N,)`` float64."""
    k_count, n_count, m = a.shape
    for r in numba.prange(k_count * n_count):
        k, n = _sample_row(r, n_count)
        s = 0.0
        for j in range(m):
            d = np.float64(a[k, n, j]) - np.float64(b[n, j])
            s += d * d
        out[r] = s


@numba.njit(parallel=True, **_SUMS)
def read_sums(y, t, out):
    """Per row ``b`` of reads ``y`` and ideal products ``t`` ``(B, N, M)``, summed over the
    ``N`` inputs in float64: ``out[:, b]`` = (the sums of ``t**2``, ``t y``, ``y**2``,
    ``t**4``, ``t``, ``y``), ``out`` ``(6, B, M)`` float64, zeroed.  Each row summed in
    one thread, so that the sums are the same whatever the thread count."""
    b_count, n_count, m = y.shape
    for b in numba.prange(b_count):
        for n in range(n_count):
            for j in range(m):
                tv, yv = np.float64(t[b, n, j]), np.float64(y[b, n, j])
                t2 = tv * tv
                out[0, b, j] += t2
                out[1, b, j] += tv * yv
                out[2, b, j] += yv * yv
                out[3, b, j] += t2 * t2
                out[4, b, j] += tv
                out[5, b, j] += yv


@numba.njit(inline="always", **_JIT)
def _spd_inverse(a, out):
    """``out`` = the inverse of the symmetric positive-definite ``a`` ``(n, n)`` (which it
    overwrites), by Gauss-Jordan elimination without pivoting (stable on such matrices)."""
    n = a.shape[0]
    for r in range(n):
        for c in range(n):
            out[r, c] = 1.0 if r == c else 0.0
    for p in range(n):
        piv = 1.0 / a[p, p]
        for c in range(n):
            a[p, c] *= piv
            out[p, c] *= piv
        for r in range(n):
            if r != p:
                f = a[r, p]
                if f != 0.0:
                    for c in range(n):
                        a[r, c] -= f * a[p, c]
                        out[r, c] -= f * out[p, c]


@numba.njit(parallel=True, **_JIT)
def gated_reads(g, tiles, v, r_access, r_row, r_col, r_source, r_sink, out):
    """:func:`xbar.circuit.solve_gated` on the CPU, one read per parallel task: ``out[b]``
    ``(C,)`` = the currents into the sense nodes of tile ``g[tiles[b]]`` ``(R, C)`` (S,
    float64) read with drives ``v[b]`` ``(R,)``, where only the rows driven (``v != 0``)
    are connected, each device through ``r_access``.  The same elimination as the torch
    path: the connected rows and the last keep nodes; each column's bitline chain is
    inverted from its pivots and eliminated onto the column's wordline nodes; block
    Thomas over the columns with ``k x k`` blocks (inverted by Gauss-Jordan)."""
    n_reads = v.shape[0]
    R, C = g.shape[1], g.shape[2]
    gr = 1.0 / r_row
    gs = 1.0 / r_source if r_source > 0 else 0.0
    gk = 1.0 / r_sink if r_sink > 0 else 0.0
    for b in numba.prange(n_reads):
        t = tiles[b]
        rows = np.empty(R, np.int64)
        k = 0
        for i in range(R):
            if v[b, i] != 0.0 or i == R - 1:
                rows[k] = i
                k += 1
        gt = np.zeros((C, k))
        vk = np.zeros(k)
        for m in range(k):
            i = rows[m]
            if v[b, i] != 0.0:
                vk[m] = v[b, i]
                for j in range(C):
                    gij = g[t, i, j]
                    gt[j, m] = gij / (1.0 + gij * r_access)
        h = np.zeros(max(k - 1, 1))
        for m in range(k - 1):
            h[m] = 1.0 / ((rows[m + 1] - rows[m]) * r_col)
        nb = k if r_sink > 0 else k - 1  # free bitline nodes (the last is at 0 V where r_sink = 0)
        s = np.zeros((C, k, k))
        blast = np.zeros((C, max(nb, 1)))
        fwd, bwd, d = np.empty(max(nb, 1)), np.empty(max(nb, 1)), np.empty(max(nb, 1))
        inv = np.empty((max(nb, 1), max(nb, 1)))
        for j in range(C):
            deg = 2.0 if 0 < j < C - 1 else (1.0 if C > 1 else 0.0)
            for m in range(k):
                s[j, m, m] = gt[j, m] + deg * gr + (gs if j == 0 else 0.0)
            if nb == 0:
                continue
            for m in range(nb):
                dm = gt[j, m]
                if m > 0:
                    dm += h[m - 1]
                if m < k - 1:
                    dm += h[m]
                else:
                    dm += gk
                d[m] = dm
            fwd[0] = d[0]
            for m in range(1, nb):
                fwd[m] = d[m] - h[m - 1] * h[m - 1] / fwd[m - 1]
            bwd[nb - 1] = d[nb - 1]
            for m in range(nb - 2, -1, -1):
                bwd[m] = d[m] - h[m] * h[m] / bwd[m + 1]
            for c in range(nb):
                x = 1.0 / (fwd[c] + bwd[c] - d[c])
                inv[c, c] = x
                for r in range(c - 1, -1, -1):
                    x *= h[r] / fwd[r]
                    inv[r, c] = x
                    inv[c, r] = x
            for m in range(nb):
                blast[j, m] = inv[nb - 1, m]
                for m2 in range(nb):
                    s[j, m, m2] -= gt[j, m] * inv[m, m2] * gt[j, m2]
        first = 0 if r_source > 0 else 1
        alpha = np.zeros((C, k))
        if first == 1:
            for m in range(k):
                alpha[0, m] = vk[m]
        if first < C:
            p_inv = np.empty((C, k, k))
            y = np.zeros((C, k))
            p = np.empty((k, k))
            for j in range(first, C):
                for m in range(k):
                    for m2 in range(k):
                        p[m, m2] = s[j, m, m2] - (gr * gr * p_inv[j - 1, m, m2] if j > first else 0.0)
                    if j == first:
                        y[j, m] = vk[m] * (gs if r_source > 0 else gr)
                    else:
                        acc = 0.0
                        for m2 in range(k):
                            acc += p_inv[j - 1, m, m2] * y[j - 1, m2]
                        y[j, m] = gr * acc
                _spd_inverse(p, p_inv[j])
            rhs = np.empty(k)
            for j in range(C - 1, first - 1, -1):
                for m in range(k):
                    rhs[m] = y[j, m] + (gr * alpha[j + 1, m] if j < C - 1 else 0.0)
                for m in range(k):
                    acc = 0.0
                    for m2 in range(k):
                        acc += p_inv[j, m, m2] * rhs[m2]
                    alpha[j, m] = acc
        for j in range(C):
            beta = 0.0
            for m in range(nb):
                beta += blast[j, m] * gt[j, m] * alpha[j, m]
            if r_sink > 0:
                out[b, j] = beta * gk
            else:
                cur = gt[j, k - 1] * alpha[j, k - 1]
                if nb > 0:
                    cur += h[k - 2] * beta
                out[b, j] = cur
