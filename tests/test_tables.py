import json

import numpy as np
import pytest

from stac.tables import (MAX_STEP, TableSet, TableSetError, block_levels, geometric_bounds, grace_table,
                         region_grid, stac_table, table_set_id, water_fill)


def test_water_fill_hand_worked():
    # budget 4 over 4 frequencies: share 1 each. f0 (worst 0.5 < 1) is zeroed and leaves 0.5, so the
    # share becomes 3.5 / 3 = 1.1667; now f1 (worst 1.1) is below it, zeroed, leaving 2.4 for f2, f3.
    share, zeroed = water_fill(np.ones(4), np.array([0.5, 1.1, 10.0, 10.0]), 4.0)
    assert zeroed.tolist() == [True, True, False, False]
    np.testing.assert_allclose(share, [0.5, 1.1, 1.2, 1.2])


def test_water_fill_nothing_to_zero():
    share, zeroed = water_fill(np.array([1.0, 2.0]), np.array([10.0, 10.0]), 2.0)
    assert not zeroed.any()
    np.testing.assert_allclose(share, [1.0, 1.0])


def test_grace_table_hand_worked():
    g = np.full((3, 64), 0.01)
    s = np.full((3, 64), 1000.0)
    s[0, 63] = 1.0  # worst loss 0.01 is below the share: zero it with the coarsest step
    g[2, 5] = 0.0  # insensitive frequency: coarsest step
    num_coeffs = 192 * 100
    table = grace_table(g, s, bound=0.05 * num_coeffs, num_coeffs=num_coeffs)
    # 192 shares of 0.05, one zeroed using 0.01, one insensitive (no share): 190 share 9.59 -> 0.050474
    share = (0.05 * 192 - 0.01) / 190
    assert table[0, 63] == MAX_STEP and table[2, 5] == MAX_STEP
    assert table[0, 0] == round(2 * share / 0.01) == 10
    assert (table[1] == 10).all()


def test_grace_without_magnitudes_equals_stac_table(default_tables):
    ts = default_tables
    np.testing.assert_array_equal(grace_table(ts.gradients, None, ts.bound, ts.num_coeffs),
                                  stac_table(ts.gradients, ts.bound, ts.num_coeffs))


def test_stac_table_formula_and_clamp():
    g = np.full((3, 64), 0.5)
    g[0, 0] = 1e-9  # would be a huge step: clamped
    g[0, 1] = 1e3  # would be below 1: clamped
    table = stac_table(g, bound=100.0, num_coeffs=20)  # 2B/M = 10 -> q = 10 / |g| = 20
    assert table.dtype == np.uint16
    assert table[0, 0] == 255 and table[0, 1] == 1 and table[1, 7] == 20


def test_levels_monotone(default_tables):
    t = default_tables.tables.astype(int)
    assert default_tables.levels == 16
    assert (np.diff(t, axis=0) >= 0).all()
    assert (t[-1] > t[0]).any()
    np.testing.assert_allclose(geometric_bounds(8.0, 4, 2.0), [2.0, 4.0, 8.0, 16.0])


def test_table_set_round_trip_and_id(default_tables, tmp_path):
    path = tmp_path / "tables.json"
    default_tables.save(path)
    doc = json.loads(path.read_text())
    for key in ["tables", "bounds", "gradients", "bound", "block", "region_blocks", "subsampling", "model", "id"]:
        assert key in doc
    back = TableSet.load(path)
    np.testing.assert_array_equal(back.tables, default_tables.tables)
    assert back.id == default_tables.id
    import hashlib
    want = hashlib.sha256(np.asarray(doc["tables"], "<u2").tobytes()).hexdigest()[:16]
    assert doc["id"] == want == table_set_id(back.tables).hex()


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("bounds"), "missing keys bounds"),
    (lambda d: d.update(id="00" * 8), "does not match its tables"),
    (lambda d: d["tables"][0][0].__setitem__(0, 0), "integers in 1..255"),
    (lambda d: d.update(subsampling="420"), "subsampling"),
    (lambda d: d.update(gradients=[[1.0] * 64] * 2), "gradients must be"),
])
def test_table_set_errors(default_tables, tmp_path, edit, message):
    doc = json.loads(default_tables.to_json())
    edit(doc)
    path = tmp_path / "tables.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(TableSetError, match=message):
        TableSet.load(path)


def test_table_set_missing_file(tmp_path):
    with pytest.raises(TableSetError, match="cannot read"):
        TableSet.load(tmp_path / "nope.json")


def test_region_grid_and_block_levels():
    assert region_grid(34, 64, 3) == (12, 22)
    levels = np.arange(6, dtype=np.uint8).reshape(2, 3)
    blv = block_levels(levels, 5, 7, 3)
    assert blv.shape == (5, 7)
    assert blv[0, 0] == 0 and blv[2, 2] == 0 and blv[3, 3] == 4 and blv[4, 6] == 5
    with pytest.raises(ValueError, match="region grid"):
        block_levels(levels, 9, 7, 3)


def test_size_warning_only_far_from_the_calibration_size():
    base = TableSet.default()
    calibrated = TableSet(base.tables, base.bounds, base.gradients, base.bound, base.num_coeffs,
                          {"name": "m", "calibration": {"size": [144, 176]}})
    assert calibrated.size_warning(144, 176) is None and calibrated.size_warning(200, 250) is None
    assert "recalibrate" in calibrated.size_warning(576, 768) and "176x144" in calibrated.size_warning(576, 768)
    assert calibrated.size_warning(72, 88) is not None  # 4x fewer pixels
    assert base.size_warning(576, 768) is None  # the built-in set was calibrated for no size
