import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mapping

dims = st.integers(1, 70)
tiles = st.tuples(st.integers(1, 40), st.integers(2, 40))


def matrix(seed, m, n):
    return torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), m=dims, n=dims, tile=tiles, scheme=st.sampled_from(mapping.SCHEMES),
       scale=st.sampled_from(mapping.WEIGHT_SCALES))
def test_map_then_unmap_returns_the_weights(seed, m, n, tile, scheme, scale):
    w = matrix(seed, m, n)
    layout = mapping.layout_weights(w, 1e-6, 1e-4, None, tile, scheme, scale)
    assert layout.targets.shape[-2:] == tile
    assert layout.targets.min() >= 1e-6 - 1e-18 and layout.targets.max() <= 1e-4 + 1e-18
    torch.testing.assert_close(mapping.unmap_layout(layout), w, rtol=1e-10, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), m=dims, n=dims, rows=st.integers(1, 33), cols=st.integers(1, 33))
def test_tiling_round_trip(seed, m, n, rows, cols):
    w = matrix(seed, m, n)
    t = mapping.tile_matrix(w, rows, cols)
    assert t.shape[-2:] == (rows, cols)
    assert torch.equal(mapping.untile_matrix(t, (m, n)), w)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), levels=st.integers(2, 64))
def test_quantize_to_levels_is_within_half_a_step_and_idempotent(seed, levels):
    g_min, g_max = 2e-6, 5e-5
    g = g_min + (g_max - g_min) * torch.rand(500, generator=torch.Generator().manual_seed(seed),
                                             dtype=torch.float64)
    q = mapping.quantize_levels(g, g_min, g_max, levels)
    step = (g_max - g_min) / (levels - 1)
    assert ((q - g).abs() <= step / 2 + 1e-18).all()
    assert torch.equal(mapping.quantize_levels(q, g_min, g_max, levels), q)
    assert len(torch.unique(q)) <= levels


def test_quantized_mapping_error_bounded_by_level_step():
    w = matrix(0, 50, 30)
    levels = 16
    layout = mapping.layout_weights(w, 1e-6, 1e-4, levels, (32, 32), "differential")
    w_step = layout.w_max / (levels - 1)
    assert (mapping.unmap_layout(layout) - w).abs().max() <= w_step / 2 + 1e-12


@pytest.mark.parametrize("scheme", mapping.SCHEMES)
def test_per_column_scales_give_every_output_the_whole_window(scheme):
    """With a scale per column, each output's largest |w| sits at the edge of the window
    (as the layer's largest does with one scale), an all-zero output is exact, and the
    level rounding of output j is within half of its own step, ``w_max_j / steps``."""
    g_min, g_max, levels = 1e-6, 1e-4, 17
    w = matrix(3, 40, 6) * torch.tensor([1.0, 0.5, 0.1, 0.02, 0.0, 3.0], dtype=torch.float64)
    layout = mapping.layout_weights(w, g_min, g_max, levels, (16, 16), scheme, "column")
    col_max = w.abs().amax(0)
    expected = torch.where(col_max > 0, col_max / col_max.max(), torch.ones_like(col_max))
    torch.testing.assert_close(layout.column_scale, expected, rtol=1e-12, atol=0)
    g_ref, half = (g_min, g_max - g_min) if scheme == "differential" else mapping.offset_reference(g_min, g_max, levels)
    # the largest |w| of each non-zero output: at the full swing (g_max, or g_ref +- half)
    full = mapping.layout_weights(w, g_min, g_max, None, (16, 16), scheme, "column")
    for j in torch.nonzero(col_max > 0).flatten().tolist():
        tile, row = divmod(int(w[:, j].abs().argmax()), 16)
        cols = [2 * j, 2 * j + 1] if scheme == "differential" else [j]
        swing = (full.targets[tile, 0, row, cols] - g_ref).abs().max()
        assert float(swing) == pytest.approx(half, rel=1e-12)
    steps = (levels - 1) if scheme == "differential" else half / ((g_max - g_min) / (levels - 1))
    err = mapping.unmap_layout(layout) - w
    assert (err.abs() <= col_max / steps / 2 + 1e-12).all()
    assert float(err[:, 4].abs().max()) == 0.0
    # one scale for the layer: the small outputs round to the layer's coarser step
    layer = mapping.layout_weights(w, g_min, g_max, levels, (16, 16), scheme, "layer")
    assert float((mapping.unmap_layout(layer) - w)[:, 3].abs().max()) > float(err[:, 3].abs().max())


def test_differential_pairs_sit_in_adjacent_columns():
    w = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    layout = mapping.layout_weights(w, 1e-6, 1e-4, None, (4, 4), "differential")
    row = layout.targets[0, 0, 0]
    torch.testing.assert_close(row, torch.tensor([5.05e-5, 1e-6, 1e-6, 1e-4], dtype=torch.float64))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), levels=st.integers(3, 64))
def test_offset_mapping_is_unbiased_for_any_number_of_levels(seed, levels):
    """Zero is a level and the levels are symmetric about the reference: the error of a
    weight is within half a step, a zero weight is exact, and the mean error of uniform
    weights is zero up to sampling (its sd is step / sqrt(12 n) = 0.006 step here)."""
    g_min, g_max = 1e-6, 1e-4
    w = (2 * torch.rand(50, 50, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) - 1)
    w[0, 0] = 0.0
    layout = mapping.layout_weights(w, g_min, g_max, levels, (32, 32), "offset")
    g_ref, half = mapping.offset_reference(g_min, g_max, levels)
    step_w = layout.w_max * ((g_max - g_min) / (levels - 1)) / half  # one level, in weight units
    err = mapping.unmap_layout(layout) - w
    assert err.abs().max() <= step_w / 2 + 1e-12
    assert err[0, 0] == 0.0
    assert abs(float(err.mean())) < 0.04 * step_w
    assert layout.targets.min() >= g_min - 1e-18 and layout.targets.max() <= g_max + 1e-18
    # every target is one of the device's levels (the reference column included)
    k = (layout.targets - g_min) / ((g_max - g_min) / (levels - 1))
    torch.testing.assert_close(k, k.round(), rtol=0, atol=1e-9)


def test_offset_mapping_needs_three_levels():
    w = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="levels = 2 is not allowed with the offset mapping"):
        mapping.layout_weights(w, 1e-6, 1e-4, 2, (8, 8), "offset")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       dilation=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       padding=st.tuples(st.integers(0, 3), st.integers(0, 3)),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)), channels_last=st.booleans())
def test_unfold_input_orders_the_windows_as_torch_unfold(seed, kernel, dilation, padding, stride, channels_last):
    x = torch.randn(3, 4, 13, 11, generator=torch.Generator().manual_seed(seed))
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    cols = mapping.unfold_input(x, kernel, dilation, padding, stride)
    expected = torch.nn.functional.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
    assert cols.is_contiguous()
    assert torch.equal(cols, expected.transpose(1, 2))
