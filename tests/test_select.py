import numpy as np

from stac.select import next_levels, region_cost, select_levels


def algorithm_1(grad, tables, bound, region_blocks):
    """The paper's pseudo-code, loop for loop."""
    _, hb, wb, _ = grad.shape
    rh, rw = -(-hb // region_blocks), -(-wb // region_blocks)
    r_max = rh * rw
    levels = np.zeros((rh, rw), np.uint8)
    for ri in range(rh):
        for rj in range(rw):
            best = np.inf
            for level in range(tables.shape[0]):
                cost = 0.0
                for c in range(3):
                    for bi in range(ri * region_blocks, min((ri + 1) * region_blocks, hb)):
                        for bj in range(rj * region_blocks, min((rj + 1) * region_blocks, wb)):
                            cost += float(np.sum(np.abs(grad[c, bi, bj]) * tables[level, c] / 2))
                if abs(cost - bound / r_max) < best:
                    levels[ri, rj] = level
                    best = abs(cost - bound / r_max)
    return levels


def test_matches_the_pseudo_code_with_partial_regions():
    rng = np.random.default_rng(7)
    grad = rng.standard_normal((3, 7, 11, 64)) * rng.random((1, 7, 11, 1)) * 1e-3
    tables = np.sort(rng.integers(1, 256, (16, 3, 64)), axis=0)
    cost = region_cost(grad, tables, 3)
    assert cost.shape == (3, 4, 16)
    bound = float(np.median(cost)) * 12
    np.testing.assert_array_equal(next_levels(grad, tables, bound, 3), algorithm_1(grad, tables, bound, 3))


def test_sensitive_regions_get_finer_levels():
    grad = np.full((3, 6, 6, 64), 1e-4)
    grad[:, :3, :3] = 1e-2  # top-left region is 100x more sensitive
    tables = np.stack([np.full((3, 64), q) for q in (1, 2, 4, 8, 16, 32)])
    cost = region_cost(grad, tables, 3)
    # an unsensitive region at level 3 (step 8): 9 blocks * 192 coefficients * 1e-4 * 8 / 2
    np.testing.assert_allclose(cost[1, 1, 3], 9 * 192 * 1e-4 * 4)
    levels = select_levels(cost, bound=cost[1, 1, 3] * 4)
    assert levels[1, 1] == 3 and levels[0, 0] == 0


def test_ties_pick_the_coarsest_level():
    cost = np.array([[[2.0, 0.0, 2.0]]])
    assert select_levels(cost, bound=1.0)[0, 0] == 2


def test_near_zero_costs_are_not_ties_in_float32():
    """Costs far below B / r_max: in float32 every |cost - B / r_max| rounds to the same value; the closest
    (largest) cost is the coarsest level, as in float64."""
    cost = (np.array([1e-9, 2e-9, 4e-9, 8e-9], np.float64) * np.ones((2, 3, 1))).astype(np.float32)
    bound = np.float32(6.0)
    assert len(set(np.abs(cost[0, 0] - bound / 6).tolist())) == 1  # the float32 ties the head used to see
    np.testing.assert_array_equal(select_levels(cost, float(bound)), np.full((2, 3), 3))


def test_all_clamped_levels_pick_the_coarsest():
    """Levels whose tables are all 255 cost the same: choose the coarsest index, not the first."""
    grad = np.full((3, 3, 3, 64), 1e-3)
    tables = np.stack([np.full((3, 64), q) for q in (64, 128, 255, 255, 255)])
    levels = select_levels(region_cost(grad, tables, 3), bound=1e6)
    assert levels[0, 0] == 4
