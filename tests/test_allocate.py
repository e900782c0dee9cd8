"""The device's rate-aware level maps (`--selection boundary`): region sums, the rate estimate, the knapsack."""
import numpy as np
import pytest

from device_runtime.runtime import Runtime, RuntimeConfig
from stac.allocate import (COARSER_QP, STEP, allocate, boundary_levels, boundary_offsets, grown_region_sums,
                           region_rate, region_sensitivity)
from stac.codec import make_codec
from stac.edge.client import LocalEdge
from stac.codec.transform import dct_quantize
from stac.tables import TableSet, blocks_for


def test_grown_region_sums_equal_a_direct_count():
    rng = np.random.default_rng(0)
    pixels = rng.random((50, 70)) < 0.2
    found = grown_region_sums(pixels, (3, 3), 24, margin=5)
    for i in range(3):
        for j in range(3):
            window = pixels[max(0, 24 * i - 5):24 * (i + 1) + 5, max(0, 24 * j - 5):24 * (j + 1) + 5]
            assert found[i, j] == window.sum()


def test_the_rate_estimate_tracks_the_coded_bytes(carphone_frames):
    tables = TableSet.default()
    frame = carphone_frames[0]
    hb, wb = blocks_for(*frame.shape[:2])
    coeffs = dct_quantize(frame, np.zeros((hb, wb), np.uint8), np.ones((1, 3, 64), np.float32))
    estimated = region_rate(coeffs, tables.steps, tables.region_blocks).sum(axis=(0, 1))
    coded = [len(make_codec(f"stac:level={level}", tables).encode(frame)) for level in range(tables.levels)]
    assert estimated.shape == (tables.levels,) and np.all(np.diff(estimated) < 0)
    assert np.corrcoef(estimated, coded)[0, 1] > 0.99


def _problem(seed=1, shape=(6, 8), levels=16):
    rng = np.random.default_rng(seed)
    bounds = 2.0 ** (np.arange(levels) / 2)
    base = rng.uniform(200, 2000, shape)[..., None]
    rate = base * bounds[None, None] ** -0.7  # coarser levels cost fewer bits
    sensitivity = np.where(rng.random(shape) < 0.3, rng.uniform(10, 100, shape), 1.0)
    return rate, sensitivity, bounds


@pytest.mark.parametrize("level", [0, 5, 15])
def test_allocate_spends_fewer_bits_for_no_more_predicted_change(level):
    rate, sensitivity, bounds = _problem()
    chosen = allocate(rate, sensitivity, bounds, level).astype(int)
    assert chosen.shape == sensitivity.shape and np.all(np.abs(chosen - level) <= STEP)
    assert np.all((chosen >= 0) & (chosen < len(bounds)))
    change = (sensitivity * bounds[chosen]).sum()
    assert change <= sensitivity.sum() * bounds[level] * (1 + 1e-9)
    bits = np.take_along_axis(rate, chosen[..., None], -1).sum()
    assert bits <= rate[..., level].sum()
    if 0 < level < 15:  # the insensitive regions coarser, the sensitive ones not
        assert chosen[sensitivity > 1].mean() <= level < chosen[sensitivity == 1].mean()


def test_an_even_sensitivity_keeps_one_level_everywhere():
    rate, _, bounds = _problem()
    even = np.ones(rate.shape[:2])
    chosen = allocate(rate * 0 + 1000 * bounds ** -0.7, even, bounds, 7)  # the same rate curve everywhere
    assert np.all(chosen == 7)


def test_sensitivity_follows_the_mask_boundary():
    mask = np.zeros((72, 96), np.uint8)
    mask[20:50, 30:60] = 1
    sensitivity = region_sensitivity(mask, (3, 4), 24)
    assert sensitivity[0, 0] < sensitivity[1, 1] and sensitivity.min() > 0  # floored, never zero


def test_offsets_coarsen_only_macroblocks_far_from_a_boundary():
    mask = np.zeros((160, 200), np.uint8)
    mask[40:110, 60:130] = 1
    offsets = boundary_offsets(mask)
    assert offsets.shape == (10, 13) and offsets.dtype == np.float32
    assert offsets[2, 3] == 0 and offsets[9, 0] == COARSER_QP  # on the object's corner; far from it
    assert offsets[4, 5] == 0  # inside the object, within the margin of its boundary
    assert set(np.unique(offsets)) == {0.0, COARSER_QP}
    np.testing.assert_array_equal(boundary_offsets(mask, 6.0, 0) > 0, boundary_offsets(mask, 6.0, 0) == 6.0)
    assert (boundary_offsets(mask, margin=0) > 0).sum() > (offsets > 0).sum()  # a narrower margin spares fewer
    assert (boundary_offsets(np.zeros((64, 64), np.uint8)) == COARSER_QP).all()  # nothing to segment anywhere


def test_boundary_selection_in_the_runtime(exported, carphone_frames):
    tables = TableSet.default()
    edge = LocalEdge(exported("selfie"), tables)
    runtime = Runtime(edge, tables, carphone_frames[0].shape[:2], RuntimeConfig(sync=True, every=1, codec="stac",
                                                                                    selection="boundary"))
    results = [runtime.process(f) for f in carphone_frames[:4]]
    assert (results[0].levels == tables.middle_level).all()  # no mask yet: one level
    later = [r.levels for r in results[1:]]
    assert all(lv.shape == tables.regions(144, 176) for lv in later)
    assert any(len(np.unique(lv)) > 1 for lv in later)
    direct = boundary_levels(carphone_frames[1], results[0].mask, tables, tables.middle_level)
    assert direct.shape == later[0].shape
