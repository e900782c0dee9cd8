"""Rate control: the controller against a known size model, the tracking figures, and the runtime's knob."""
import numpy as np
import pytest

from device_runtime.run import run
from device_runtime.runtime import Runtime, RuntimeConfig
from device_runtime.sources import Source
from stac.edge.client import LocalEdge
from stac.rate import CRF_RANGE, RateController, crf_step, step_crf, tracking_error
from stac.tables import TableSet


def _simulate(kbps: float, frames: int = 600, every: int = 3, fps: float = 30.0, seed: int = 0,
              exponent: float = 0.8) -> tuple[list[int], RateController]:
    """Keyframes every ``every`` frames of 3000 B x (bound / B)^-exponent with 20% noise: 10 keyframes per second,
    80-720 Kbps over the default set's levels. The controller assumes another exponent: feedback makes up the
    difference."""
    tables = TableSet.default()
    controller = RateController.for_bound(kbps, fps, tables)
    rng = np.random.default_rng(seed)
    sent = []
    for i in range(frames):
        nbytes = 0
        if i % every == 0:
            level = tables.level_for(controller.knob(i))
            bound = tables.bounds[level]
            nbytes = int(3000 * (bound / tables.bound) ** -exponent * rng.lognormal(0, 0.2))
            controller.update(i, nbytes, bound)
        sent.append(nbytes)
    return sent, controller


@pytest.mark.parametrize("kbps", [150, 300, 600])
def test_the_controller_meets_a_reachable_budget(kbps):
    sent, _ = _simulate(kbps)
    settled = tracking_error(sent[60:], 30.0, kbps)  # after the first two seconds
    assert abs(settled["rate_error"]) < 0.05
    assert settled["rate_error_2s"] < 0.15


def test_an_unreachable_budget_saturates_at_the_end_levels():
    tables = TableSet.default()
    sent, controller = _simulate(10)
    assert controller.knob(600) == pytest.approx(tables.bounds[-1])
    assert tracking_error(sent, 30.0, 10)["rate_error"] > 1  # reported, not hidden
    _, controller = _simulate(1e6)
    assert controller.knob(600) == pytest.approx(tables.bounds[0])


def test_tracking_error_on_known_numbers():
    fps = 10.0
    sent = [250] * 40  # 250 B per frame at 10 fps = 20 Kbps
    assert tracking_error(sent, fps, 20.0) == {"kbps_target": 20.0, "rate_error": 0.0, "rate_error_2s": 0.0}
    uneven = [500] * 20 + [0] * 20  # 40 Kbps for two seconds, then nothing: windows at +100% and -100%
    figures = tracking_error(uneven, fps, 20.0)
    assert figures["rate_error"] == pytest.approx(0.0) and figures["rate_error_2s"] == pytest.approx(1.0)


@pytest.mark.parametrize("kbps, fps", [(0, 30), (-5, 30), (float("nan"), 30), (100, 0)])
def test_the_controller_refuses_meaningless_budgets(kbps, fps):
    with pytest.raises(ValueError):
        RateController.for_bound(kbps, fps, TableSet.default())
    with pytest.raises(ValueError):
        RateController.for_crf(kbps, fps, 30)


def test_the_crf_controller_meets_a_budget_on_a_known_size_model():
    """Keyframes every 3rd frame of 2000 B x (step / step(30))^-0.9 with 20% noise; the controller assumes 0.8."""
    controller = RateController.for_crf(200, 30.0, 30)
    rng = np.random.default_rng(1)
    sent, crfs = [], []
    for i in range(600):
        nbytes = 0
        if i % 3 == 0:
            step = controller.knob(i)
            crfs.append(step_crf(step))
            nbytes = int(2000 * (step / crf_step(30)) ** -0.9 * rng.lognormal(0, 0.2))
            controller.update(i, nbytes, step)
        sent.append(nbytes)
    assert crfs[0] == pytest.approx(30) and all(CRF_RANGE[0] <= c <= CRF_RANGE[1] for c in crfs)
    assert abs(tracking_error(sent[60:], 30.0, 200)["rate_error"]) < 0.05
    assert step_crf(crf_step(23.5)) == pytest.approx(23.5) and crf_step(36) == pytest.approx(2 * crf_step(30))


def test_level_for_picks_the_nearest_level_on_a_log_scale():
    tables = TableSet.default()
    assert tables.level_for(tables.bound) == tables.middle_level
    assert tables.level_for(tables.bounds[3] * 1.01) == 3
    two = TableSet(np.ones((2, 3, 64)), [1.0, 4.0], np.ones((3, 64)), 1.0, 1, {"name": "two"})
    assert two.level_for(2.0) == 1  # halfway on a log scale: the coarser level
    assert tables.level_for(1e-9) == 0 and tables.level_for(1e12) == tables.levels - 1
    with pytest.raises(ValueError, match="positive"):
        tables.level_for(0.0)


class Asked(LocalEdge):
    """The real local edge, remembering the bound each request asked for."""

    def segment(self, data, kind, size, bound=None, stream=None, *options, **named):
        self.asked.append(bound)
        return super().segment(data, kind, size, bound, stream, *options, **named)


def test_a_fixed_bound_sets_the_level_and_goes_to_the_edge(exported, carphone_frames):
    tables = TableSet.default()
    edge = Asked(exported("selfie"), tables)
    edge.asked = []
    bound = float(tables.bounds[2])
    for selection in ("uniform", "paper"):
        runtime = Runtime(edge, tables, carphone_frames[0].shape[:2],
                          RuntimeConfig(sync=True, every=1, selection=selection, bound=bound, codec="stac"))
        results = [runtime.process(f) for f in carphone_frames[:3]]
        assert (results[0].levels == 2).all()  # the first keyframe: the level of the bound everywhere
        if selection == "uniform":
            assert all((r.levels == 2).all() for r in results)
    assert edge.asked == [bound] * 6
    huge = Runtime(edge, tables, carphone_frames[0].shape[:2],
                   RuntimeConfig(sync=True, every=1, selection="paper", bound=1e12, codec="stac"))
    results = [huge.process(f) for f in carphone_frames[:2]]
    assert (results[1].levels == tables.levels - 1).all()  # the edge selected against the huge bound


@pytest.mark.parametrize("config, message", [
    (RuntimeConfig(codec="jpeg:q=80", kbps=100), "STAC or H.264 keyframes only"),
    (RuntimeConfig(codec="h264", bound=3.0), "STAC keyframes only"),
    (RuntimeConfig(kbps=100, bound=3.0, codec="stac"), "not both"),
    (RuntimeConfig(bound=-1.0, codec="stac"), "positive"),
    (RuntimeConfig(kbps=0.0), "positive"),
])
def test_rate_options_are_checked(exported, config, message):
    tables = TableSet.default()
    with pytest.raises(ValueError, match=message):
        Runtime(LocalEdge(exported("selfie"), tables), tables, (144, 176), config)


@pytest.mark.parametrize("codec, budgets", [("stac", (250, 400)), ("h264:crf=30", (30, 60))])
def test_a_lower_budget_sends_fewer_bytes_and_the_report_says_how_close(exported, codec, budgets):
    tables = TableSet.default()
    reports = [run(Source("carphone", max_frames=120), LocalEdge(exported("selfie"), tables), tables,
                   RuntimeConfig(sync=True, every=6, kbps=kbps, fps=30.0, codec=codec)) for kbps in budgets]
    low, high = reports
    assert low["uplink_kbps"] < high["uplink_kbps"]
    for report, kbps in zip(reports, budgets):
        assert report["kbps_target"] == kbps
        assert report["rate_error"] == pytest.approx(report["uplink_kbps"] / kbps - 1)
        assert abs(report["rate_error"]) < 0.25
