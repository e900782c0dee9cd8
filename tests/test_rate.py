"""Rate control: the controller against a known size model, the tracking figures, and the runtime's knob."""
import numpy as np
import pytest

from device_runtime.run import run
from device_runtime.runtime import Runtime, RuntimeConfig
from device_runtime.sources import Source
from stac.edge.client import LocalEdge
from stac.link import Link, on_wire
from stac.rate import (AUTO_FINEST_CRF, CRF_RANGE, WINDOW_GAIN, AutoRate, DeliveryRate, RateController, crf_step,
                       step_crf, tracking_error)
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


def _through(link: Link, sizes: list[int], every: float, edge_s: float = 0.02) -> tuple[DeliveryRate, list]:
    """Requests of ``sizes`` bytes handed every ``every`` s through a modelled link; the estimator fed in order."""
    rate, timelines = DeliveryRate(), []
    for i, size in enumerate(sizes):
        timelines.append(link.exchange(i * every, 0.0, size, edge_s, 200))
    for t, size in sorted(zip(timelines, sizes), key=lambda p: p[0].available):
        rate.answered(t.sent, t.available, size)
    return rate, timelines


def test_the_delivery_rate_is_the_bottlenecks():
    # requests that wait behind each other on a 2 Mbps uplink: the uplink's rate, headers aside
    rate, _ = _through(Link.parse("up=2M,down=inf,rtt=40ms"), [20000] * 20, every=0.01)
    assert rate.estimate * 8 == pytest.approx(2e6 * 20000 / on_wire(20000), rel=0.02)
    # an edge slower than the link (100 ms a request, 20 kB): the edge's 200 kB/s
    rate, _ = _through(Link.parse("up=20M,down=inf,rtt=10ms"), [20000] * 20, every=0.01, edge_s=0.1)
    assert rate.estimate == pytest.approx(200000, rel=0.02)
    # a device sending 10 kB a second over a fast link measures no more than its own rate's order
    rate, _ = _through(Link.parse("up=20M,down=inf,rtt=10ms"), [10000] * 10, every=1.0)
    assert rate.estimate < 10000 / 0.02


def test_bunched_answers_measure_no_more_than_was_sent():
    rate = DeliveryRate()
    for i in range(8):  # handed 50 ms apart, 10 kB each, all answers at once (a client thread held up)
        rate.answered(i * 0.05, 1.0 + i * 1e-4, 10000)
    assert rate.estimate <= 10000 * DeliveryRate.SPAN / (0.05 * (DeliveryRate.SPAN - 1)) + 1


def _auto_over(link: Link, seconds: float, fps: float = 30.0, max_delay: float = 0.25) -> tuple[AutoRate, list]:
    """A device that codes every frame at the size the budget allows (``room`` caps it), sending when the window
    lets it, through a modelled link; per answer (time, estimated Kbps, its delay)."""
    auto, pending, log = AutoRate(max_delay), [], []
    last = 0
    for i in range(int(seconds * fps)):
        now = i / fps
        for t in [t for t in pending if t.available <= now]:
            pending.remove(t)
            auto.answered(t.capture, t.sent, t.available, t.available, t.size)
            log.append((now, auto.delivery.estimate * 8 / 1e3, t.delay))
        if auto.may_send(sum(t.size for t in pending), last):
            share = auto.kbps * 1e3 / 8 / fps
            most = auto.most()
            last = int(min(share, most) if most is not None else share)
            t = link.exchange(now, 0.005, last, 0.03, 200)
            t.size = last
            pending.append(t)
    return auto, log


def test_auto_finds_the_rate_and_follows_a_step():
    auto, log = _auto_over(Link.parse("trace=step,down=20M,rtt=40ms"), 15.0)
    def estimate(a, b):
        return np.median([k for t, k, _ in log if a <= t < b])

    def p95(a, b):
        return np.percentile([d for t, _, d in log if a <= t < b], 95)
    goodput = 1448 / 1500  # a trace's packet carries a segment and its headers
    assert estimate(3, 5) == pytest.approx(5000 * goodput, rel=0.1)  # found ~5 Mbps from a start at 500 Kbps
    assert 0.8 <= estimate(7, 10) / (1000 * goodput) <= 1.02  # followed the step down to 1 Mbps
    assert estimate(13, 15) > 3000  # and back up
    assert p95(3, 5) < 0.25 and p95(7, 10) < 0.25  # answers within the target once settled


def test_auto_holds_keyframes_back_while_late():
    auto = AutoRate(0.25)
    assert auto.may_send(50000, 10000)  # nothing measured yet
    auto.answered(0.0, 0.0, 0.1, 0.1, 10000)
    assert auto.may_send(0, 10**9)  # nothing in flight: one may always go
    # 100 kB/s, answers 0.1 s after capture of which 0.1 s its own upload: room 100 kB/s x 0.25 s, of which the
    # window takes WINDOW_GAIN
    assert auto.room() == pytest.approx(25000)
    window = WINDOW_GAIN * 25000
    assert auto.may_send(int(window) - 10000, 10000) and not auto.may_send(int(window) - 9999, 10000)
    auto.answered(0.2, 0.2, 0.9, 0.9, 10000)  # 700 ms: late
    # the newest answers' rate, 20 kB over the 0.8 s the way was busy with them (not the window's best, the first
    # answer's 100 kB/s), less 20%
    assert auto.kbps == pytest.approx(0.8 * 20000 / 0.8 * 8 / 1e3) and not auto.probing
    with pytest.raises(ValueError, match="max-delay"):
        AutoRate(0.0)


def test_auto_reckons_what_an_answer_takes_besides_its_upload_at_the_rate_it_now_knows():
    auto = AutoRate(0.25)
    auto.answered(0.0, 0.0, 0.1, 0.1, 10000)  # 10 kB answered 0.1 s after capture
    auto.delivery.samples = [(0.1, 200000.0)]  # the rate found later: that upload took 0.05 s, the rest 0.05 s
    assert auto.besides() == pytest.approx((0.05, 0.05))
    # reckoned at a rate that is too low, the upload would take longer than the answer did: never below zero, or
    # the room would be more than the link delivers within the target
    auto.delivery.samples = [(0.1, 20000.0)]
    assert auto.besides() == (0.0, 0.0) and auto.room() == pytest.approx(20000 * 0.25)
    auto.answered(0.2, 0.2, 0.9, 0.9, 10000)  # late: the rate fell, and what was measured before it goes
    assert len(auto.recent) == 1


def test_auto_codes_no_finer_than_its_floor():
    for finest, expected in ((False, CRF_RANGE[0]), (True, AUTO_FINEST_CRF)):
        rate = RateController.for_crf(20000.0, 10.0, 40.0)  # a budget far over what the video needs
        if finest:
            rate.no_finer_than(crf_step(AUTO_FINEST_CRF))
        for i in range(20):
            step = rate.knob(i)
            rate.update(i, 2000, step)  # each keyframe costs little
        assert step_crf(rate.knob(20)) == pytest.approx(expected)


def test_the_runtime_finds_its_rate_over_a_modelled_step(exported):
    tables = TableSet.default()
    report = run(Source("vtest", max_frames=140), LocalEdge(exported("selfie"), tables), tables,
                 RuntimeConfig(kbps="auto", link="trace=step,down=20M,rtt=40ms", device_ms=10, edge_ms=25,
                               fps=10.0))
    rates = report["rates"]
    assert rates and report["budget_kbps_median"] > 0 and report["max_delay_ms"] == RuntimeConfig.max_delay
    late = [r["budget_kbps"] for r in rates if 7 <= r["t"] < 10]
    assert late and max(late) < 2000  # the budget followed the step down to 1 Mbps
    sent = sum(e["up_bytes"] for e in report["exchanges"] if 6 <= e["capture_s"] < 10)
    assert sent * 8 / 4 < 1.15e6  # and so did what was sent
    assert "kbps_target" not in report  # a budget that moves has no fixed target to track


def test_kbps_auto_on_the_command_line(exported, tmp_path):
    from click.testing import CliRunner

    from device_runtime.cli import main as runtime_cli

    args = ["run", "carphone", "--onnx-dir", str(exported("selfie")), "--max-frames", "20", "--link", "lte",
            "--edge-ms", "25", "--device-ms", "5"]
    result = CliRunner().invoke(runtime_cli, args + ["--kbps", "auto", "--max-delay", "200"])
    assert result.exit_code == 0 and "budget_kbps_median" in result.output, result.output
    for bad, message in ((["--kbps", "fast"], "neither a number of Kbps nor auto"),
                         (["--kbps", "auto", "--max-delay", "0"], "--max-delay must be positive")):
        result = CliRunner().invoke(runtime_cli, args + bad)
        assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
