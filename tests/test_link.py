"""The link model (stac.link) on known cases, and the runtime over it."""
import math

import numpy as np
import pytest
from click.testing import CliRunner

from device_runtime.cli import main as runtime_cli
from device_runtime.runtime import Runtime, RuntimeConfig
from stac.edge.client import LocalEdge
from stac.link import LINKS, TRACES, Link, LinkError, Trace, on_wire
from stac.tables import TableSet
from stac.video import read_frames, sample_video


def test_one_keyframe():
    link = Link.parse("up=1M,down=2M,rtt=100ms")
    t = link.exchange(capture=1.0, device_s=0.01, up_bytes=12500, edge_s=0.025, down_bytes=250)
    # coded at 1.01; 12500 B in 9 TCP segments of 66 B of headers each: 104.752 ms on the uplink; 50 ms across, 25 ms
    # at the edge, 250 + 66 B down in 1.264 ms, 50 ms back
    assert on_wire(12500) == 12500 + 9 * 66 and on_wire(0) == 66
    assert t.sent == pytest.approx(1.01) and t.at_edge == pytest.approx(1.164752)
    assert t.served == pytest.approx(1.189752) and t.available == pytest.approx(1.241016)
    assert t.delay == pytest.approx(0.241016)


def test_a_queue_on_the_uplink_and_at_the_edge():
    link = Link.parse("up=1M,down=inf,rtt=0ms")
    size = 15625 - 11 * 66  # 11 segments: 125 ms on the uplink, headers included
    first = link.exchange(0.0, 0.0, size, 0.2, 10)
    assert link.up.backlog(0.05) == pytest.approx(0.075)
    second = link.exchange(0.01, 0.0, size, 0.2, 10)  # waits for the first to leave
    assert first.at_edge == pytest.approx(0.125) and second.at_edge == pytest.approx(0.25)
    assert first.available == pytest.approx(0.325) and second.available == pytest.approx(0.525)  # edge queue
    assert link.up.backlog(0.3) == 0


def test_a_slow_downlink():
    link = Link.parse("up=inf,down=100k,rtt=20ms")
    t = link.exchange(0.0, 0.0, 1000, 0.0, 12500 - 9 * 66)  # a second to come back, its 9 segments' headers included
    assert t.at_edge == pytest.approx(0.01) and t.available == pytest.approx(1.02)


def test_a_trace_delivers_a_packet_per_opportunity(tmp_path):
    (tmp_path / "t").write_text("1\n2\n2\n3\n")  # four 1500-byte opportunities, repeating every 3 ms
    trace = Trace.load(tmp_path / "t")
    assert trace.mean_bps == pytest.approx(4 * 1500 * 8 / 0.003)
    assert [trace.time(i) for i in range(6)] == pytest.approx([0.001, 0.002, 0.002, 0.003, 0.004, 0.005])
    link = Link.parse(f"trace={tmp_path / 't'},down=inf,rtt=0ms")
    assert link.up.bps == trace.mean_bps
    assert link.exchange(0.0, 0.0, 2896, 0.0, 0).at_edge == pytest.approx(0.002)  # two full segments: 1 and 2 ms
    assert link.exchange(0.0, 0.0, 1, 0.0, 0).at_edge == pytest.approx(0.002)  # the second opportunity at 2 ms
    assert link.exchange(0.0, 0.0, 2897, 0.0, 0).at_edge == pytest.approx(0.005)  # three segments: 3, 4 (=1+3), 5 ms
    assert link.exchange(0.0101, 0.0, 1, 0.0, 0).at_edge == pytest.approx(0.011)  # idle until 10.1 ms: 11 = 2+3*3


def test_a_token_bucket_lets_a_burst_through_after_an_idle_spell():
    link = Link.parse("up=1M,down=inf,rtt=0ms,burst=3028")
    assert link.exchange(0.0, 0.0, 1000, 0.0, 0).at_edge == 0  # within the full bucket
    # 1066 B used; 3028 - 1066 = 1962 left: of 9000 B (7 segments, 9462 B on the wire) 7500 wait for the rate
    assert link.exchange(0.0, 0.0, 9000, 0.0, 0).at_edge == pytest.approx(0.06)
    later = link.up.free_at + 0.012  # 12 ms idle refills 1500 B
    assert link.exchange(later, 0.0, 2000, 0.0, 0).at_edge == pytest.approx(later + (2132 - 1500) * 8 / 1e6)
    assert link.exchange(100.0, 0.0, 2800, 0.0, 0).at_edge == 100.0  # full again (2932 B on the wire)
    assert link.exchange(200.0, 0.0, 2900, 0.0, 0).at_edge == pytest.approx(200 + (3098 - 3028) * 8 / 1e6)


def test_built_in_traces():
    step = Trace.named("step")
    assert [round(bps / 1e6, 2) for _, bps in step.spans(5.0)] == [5.0, 1.0, 5.0] and step.period == 15.0
    # 100 ms spans differ by a packet (0.96 or 1.08 Mbps at 1 Mbps); merged, they are the three steps
    assert [(s, round(bps / 1e6, 2)) for s, bps in step.stretches(0.1)] == [(5.0, 5.0), (5.0, 1.0), (5.0, 5.0)]
    low = Trace.named("step:1M/200k")
    assert [(s, round(bps / 1e6, 2)) for s, bps in low.stretches(0.1)] == [(5.0, 1.0), (5.0, 0.2), (5.0, 1.0)]
    with pytest.raises(LinkError, match="trace=fast"):
        Trace.named("step:fast/1M")
    bursty = Trace.named("bursty")
    rates = [bps for _, bps in bursty.spans(0.2)]
    assert len(rates) == len(TRACES["bursty"]) and max(rates) / min(rates) > 10 and 2e6 < bursty.mean_bps < 5e6
    link = Link.parse("trace=step,down=20M,rtt=0ms")
    assert link.up.trace.name == "step" and link.up.bps == pytest.approx(step.mean_bps)
    slow = link.exchange(6.0, 0.0, 125000, 0.0, 0).at_edge - 6.0  # 1 Mbps: ~1 s, headers included
    assert slow == pytest.approx(on_wire(125000) * 8 / 1e6, rel=0.01)


def test_jitter_delays_within_bounds_in_order_and_the_same_every_run():
    def arrivals():
        link = Link.parse("up=inf,down=inf,rtt=40ms,jitter=30ms")
        return [link.exchange(i * gap, 0.0, 100, 0.0, 100).available for i in range(200)]

    gap = 0.001  # closer than the jitter: a message waits for the one before
    first = arrivals()
    assert first == arrivals() and first == sorted(first)
    gap = 0.1  # farther: each crossing's own delay
    delays = np.array(arrivals()) - np.arange(200) * gap
    assert (delays >= 0.04 - 1e-9).all() and (delays <= 0.1 + 1e-9).all() and delays.std() > 0.01


def test_named_and_malformed_links(tmp_path):
    assert Link.parse("lte").up.bps == 4e6 and Link.parse("lte").rtt == pytest.approx(0.06)
    assert Link.parse("ideal").ideal and not Link.parse("wifi").ideal
    assert set(LINKS) >= {"constrained", "lte", "wifi"}
    assert Link.parse("up=2.5Mbps,down=500k,rtt=0.1s").down.bps == 5e5
    assert math.isinf(Link.parse("up=inf,down=1G,rtt=800us").up.bps)
    for bad, message in (("up=fast,down=1M,rtt=1ms", "up=fast: a rate"), ("up=1M,down=1M,rtt=60", "rtt=60: a time"),
                         ("up=1M,down=1M", "no round-trip time"), ("down=1M,rtt=1ms", "no uplink rate"),
                         ("up=1M,rtt=1ms", "no downlink rate"), ("up=1M,down=1M,rtt=1ms,loss=1%", "bad link item"),
                         ("up=1M,up=2M,down=1M,rtt=1ms", "twice"),
                         ("up=1M,down=1M,rtt=1ms,burst=3k", "burst=3k"), ("up=-1M,down=1M,rtt=1ms", "up=-1M"),
                         (f"trace={tmp_path / 'none'},down=1M,rtt=1ms", "none"), ("lte2", "bad link item")):
        with pytest.raises(LinkError, match=message):
            Link.parse(bad)
    (tmp_path / "bad").write_text("1\nx\n")
    with pytest.raises(LinkError, match="whole number"):
        Link.parse(f"trace={tmp_path / 'bad'},down=1M,rtt=1ms")


@pytest.fixture(scope="module")
def edge(exported):
    return LocalEdge(exported("selfie"), TableSet.default())


@pytest.fixture(scope="module")
def frames():
    return list(read_frames(sample_video("carphone"), 30))


def _run(edge, frames, **config):
    runtime = Runtime(edge, edge.tables, frames[0].shape[:2], RuntimeConfig(**config))
    results = [runtime.process(f) for f in frames]
    runtime.close()
    return runtime, results


@pytest.mark.parametrize("codec", ["stac", "h264"])
def test_an_infinite_link_is_sync(edge, frames, codec):
    synced, expected = _run(edge, frames, codec=codec, sync=True)
    linked, found = _run(edge, frames, codec=codec, link="up=inf,down=inf,rtt=0ms", device_ms=0, edge_ms=0)
    assert [r.sent_bytes for r in found] == [r.sent_bytes for r in expected]
    for a, b in zip(found, expected):
        np.testing.assert_array_equal(a.mask, b.mask)
    for key in ("uplink_bytes", "downlink_bytes", "wire_up_bytes", "wire_down_bytes", "answers"):
        assert getattr(linked.stats, key) == getattr(synced.stats, key), key
    assert linked.stats.downlink_bytes > 0 and linked.stats.delays_ms == [0.0] * linked.stats.answers


def test_answers_arrive_when_the_link_delivers_them(edge, frames):
    link = "up=1M,down=20M,rtt=60ms"  # a STAC keyframe here (~9.5 KB) takes ~76 ms to upload: longer than a frame
    runtime, results = _run(edge, frames, link=link, device_ms=5, edge_ms=25, every=1, codec="stac")
    first = next(r.index for r in results if r.answered)
    # the first keyframe (frame 0): 5 ms coding, its request at 1 Mbps (headers included), 30 ms, 25 ms at the edge,
    # its answer, 30 ms
    first_request = runtime.stats.exchanges[0]
    assert first_request["frame"] == 0 and first_request["up_bytes"] > results[0].sent_bytes
    upload = on_wire(first_request["up_bytes"]) * 8 / 1e6 * 1e3
    assert runtime.stats.delays_ms[0] == pytest.approx(5 + upload + 30 + 25 + 30, abs=3)
    assert first == math.ceil(runtime.stats.delays_ms[0] / 1e3 * 30)
    assert not any(r.answered for r in results[:first])
    assert all(d >= 5 + 60 + 25 + upload / 2 for d in runtime.stats.delays_ms)  # coding, RTT, edge, an upload at least
    # every frame is a keyframe, but the uplink never holds more than a frame's worth: frames are skipped instead
    assert runtime.stats.skipped_offloads > 0 and runtime.stats.offloaded + runtime.stats.skipped_offloads == 30
    assert max(runtime.stats.delays_ms) < 5 + 1000 / 30 + 2 * upload + 60 + 2 * 25 + 5  # no queue builds up
    summary = runtime.stats.summary()
    assert summary["delay_p50_ms"] <= summary["delay_p95_ms"] <= summary["delay_p99_ms"]


def test_the_cli_reports_real_time_and_refuses_bad_links(exported, tmp_path):
    folder = exported("selfie")
    args = ["run", "carphone", "--onnx-dir", str(folder), "--max-frames", "20", "--reference", "model"]
    result = CliRunner().invoke(runtime_cli, args + ["--link", "lte", "--edge-ms", "25", "--report",
                                                     str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    for key in ("delay_p50_ms", "delay_p95_ms", "up_kbps", "down_kbps", "downlink_kbps", "miou_vs_raw"):
        assert key in result.output
    for bad, message in ((["--link", "up=4M,rtt=60ms"], "no downlink rate"), (["--link", "up=4M,down=x,rtt=1ms"],
                                                                               "down=x: a rate"),
                         (["--link", "lte", "--sync"], "give one"), (["--edge-ms", "5"], "give --link too")):
        result = CliRunner().invoke(runtime_cli, args + bad)
        assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
