"""The device runtime: flow propagation, gating, the loop with a real local edge, faults, the CLI."""
import json
import re
import threading
import time

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from device_runtime.cli import main as runtime_main
from device_runtime.run import run
from device_runtime.runtime import Runtime, RuntimeConfig
from device_runtime.sources import Source
from stac.codec import make_codec
from stac.edge.client import EdgeAnswer, EdgeError, LocalEdge, check_answer
from stac.edge.streams import StreamDecoders
from stac.flow import Flow, compose, identity_map, warp, warp_levels
from stac.tables import TableSet
from stac.video import read_frames, sample_video


def _shift(image, dx, dy):
    return cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, dy]]), (image.shape[1], image.shape[0]),
                          borderMode=cv2.BORDER_REFLECT)


def test_mask_moves_with_a_known_shift(bikes_frames):
    frame = bikes_frames[0]
    moved = _shift(frame, 7, -4)  # content moves right 7, up 4
    grey = lambda f: cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)  # noqa: E731
    h, w = grey(frame).shape
    grid = identity_map(h, w)
    kmap = compose(grid, Flow("medium")(grey(moved), grey(frame)), grid)
    mask = np.zeros((h, w), np.uint8)
    mask[100:180, 200:400] = 1
    expected = np.zeros_like(mask)
    expected[96:176, 207:407] = 1
    got = warp(mask, kmap, nearest=True)
    inter, union = np.sum((got == 1) & (expected == 1)), np.sum((got == 1) | (expected == 1))
    assert inter / union >= 0.95
    assert warp(frame, kmap)[110:170, 220:380].astype(int).mean() == pytest.approx(
        moved[110:170, 220:380].astype(int).mean(), abs=2)


def test_level_map_moves_with_the_flow():
    levels = np.arange(6 * 8, dtype=np.uint8).reshape(6, 8)
    h, w = 6 * 24, 8 * 24
    kmap = identity_map(h, w)
    kmap[..., 0] -= 24  # current pixel x came from x - 24 in the keyframe: content moved one region right
    moved = warp_levels(levels, kmap, (h, w), 24)
    np.testing.assert_array_equal(moved[:, 1:], levels[:, :-1])
    np.testing.assert_array_equal(moved[:, 0], levels[:, 0])  # no flow from outside: the nearest region
    half = warp_levels(levels, identity_map(h // 2, w // 2), (h, w), 24)  # processing at half size
    np.testing.assert_array_equal(half, levels)


@pytest.fixture(scope="module")
def edge(exported):
    return LocalEdge(exported("selfie"), TableSet.default())


def _runtime(edge, frames, **options):
    config = RuntimeConfig(sync=True, **options)
    runtime = Runtime(edge, TableSet.default(), frames[0].shape[:2], config)
    return runtime, [runtime.process(f) for f in frames]


def test_gate_fires_on_a_scene_cut_not_on_a_static_scene(edge, carphone_frames, bikes_frames):
    static = [carphone_frames[0]] * 6
    _, results = _runtime(edge, static)
    assert [r.keyframe for r in results] == [True] + [False] * 5
    cut = [carphone_frames[0]] * 3 + [cv2.resize(bikes_frames[0], (176, 144))] * 3
    runtime, results = _runtime(edge, cut)
    assert [r.keyframe for r in results] == [True, False, False, True, False, False]
    assert results[3].psnr < 26 and results[4].psnr > 40
    assert runtime.stats.answers == 2 and all(r.answered for r in results)


class Recording(LocalEdge):
    """The real local edge, remembering what crossed the network."""

    def __init__(self, *args, fail_every=0, hang_every=0, lose=(), restart=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.sent, self.bounds, self.calls, self.fail_every, self.hang_every = [], [], 0, fail_every, hang_every
        self.streams_seen, self.lose, self.restart = [], set(lose), set(restart)
        self.release = threading.Event()

    def segment(self, data, kind, size, bound=None, stream=None, *options, **named):
        self.calls += 1
        self.sent.append(len(data))
        self.bounds.append(bound)
        self.streams_seen.append(stream)
        if self.calls in self.lose:
            raise EdgeError("injected loss: the request never reached the edge")
        if self.calls in self.restart:
            self.streams = StreamDecoders()  # the edge restarted: it holds no stream
        if self.fail_every and self.calls % self.fail_every == 0:
            raise EdgeError("injected failure")
        if self.hang_every and self.calls % self.hang_every == 0:
            self.release.wait(30)  # a request the edge never answers in time
        return super().segment(data, kind, size, bound, stream, *options, **named)


@pytest.mark.parametrize("sync", [True, False])
def test_full_local_run_every_frame_gets_a_mask(exported, sync, tmp_path):
    folder = exported("selfie")
    tables = TableSet.default()
    edge = Recording(folder, tables)
    masks = []
    # asynchronous: paced like a camera, or on a loaded machine all 60 frames can pass before the first answer
    report = run(Source("carphone", max_frames=60), edge, tables, RuntimeConfig(sync=sync), out=tmp_path,
                 pace=not sync, on_frame=lambda result, live: masks.append(result.mask))
    assert report["frames"] == 60 == len(masks) == len(list((tmp_path / "masks").glob("*.png")))
    assert report["uplink_bytes"] == sum(edge.sent) and report["offloaded"] == len(edge.sent) >= 2
    assert report["edge_errors"] == 0 and report["answers"] == report["offloaded"]
    assert report["uplink_kbps"] == pytest.approx(sum(edge.sent) * 8 / 1e3 / (60 / report["fps"]))
    assert all(m.shape == (144, 176) for m in masks)
    assert np.mean([m.mean() for m in masks[5:]]) > 0.2  # the person is found and carried along
    assert (tmp_path / "overlay.mp4").stat().st_size > 10_000


def test_sync_runs_are_deterministic(exported):
    tables = TableSet.default()
    runs = []
    for _ in range(2):
        edge = Recording(exported("selfie"), tables)
        masks = []
        run(Source("carphone", max_frames=30), edge, tables, RuntimeConfig(sync=True),
            on_frame=lambda result, live: masks.append(result.mask))
        runs.append((edge.sent, masks))
    assert runs[0][0] == runs[1][0]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_selection_decides_the_keyframes_level_maps(exported, carphone_frames):
    tables = TableSet.default()
    edge = LocalEdge(exported("selfie"), tables)
    frames = carphone_frames * 3
    levels = {}
    for selection in ("paper", "uniform"):
        runtime = Runtime(edge, tables, frames[0].shape[:2], RuntimeConfig(sync=True, every=2, selection=selection,
                                                                             codec="stac"))
        levels[selection] = [r.levels for r in (runtime.process(f) for f in frames) if r.offloaded]
    assert len(levels["uniform"]) == len(levels["paper"]) >= 5
    assert all((lv == tables.middle_level).all() for lv in levels["uniform"])
    assert any((lv != tables.middle_level).any() for lv in levels["paper"][1:])  # the edge's per-region levels
    with pytest.raises(ValueError, match="unknown selection 'best'"):
        Runtime(edge, tables, frames[0].shape[:2], RuntimeConfig(selection="best"))


@pytest.mark.parametrize("codec, psnr, selection", [
    ("stac", 26.0, "uniform"), ("jpeg:q=80", 26.0, "uniform"), ("h264:crf=30", 38.0, "boundary")])
def test_unset_gate_and_selection_are_the_codecs_defaults(exported, codec, psnr, selection):
    tables = TableSet.default()
    edge = LocalEdge(exported("selfie"), tables)
    runtime = Runtime(edge, tables, (144, 176), RuntimeConfig(codec=codec))
    assert (runtime.config.psnr, runtime.config.selection, runtime.gate_db) == (psnr, selection, psnr)
    told = Runtime(edge, tables, (144, 176), RuntimeConfig(codec=codec, psnr=20.0, selection="uniform"))
    assert (told.config.psnr, told.config.selection) == (20.0, "uniform")


class Garbled(LocalEdge):
    """The real local edge, its answers replaced by what a broken or hostile edge might send."""

    def segment(self, data, kind, size, bound=None, stream=None, *options, **named):
        answer = super().segment(data, kind, size, bound, stream, *options, **named)
        return self.garble(answer)


@pytest.mark.parametrize("garble, message", [
    (lambda a: EdgeAnswer(np.zeros((0, 0), np.uint8), a.next_levels), "MASK uint8 [0, 0]"),
    (lambda a: EdgeAnswer(np.zeros((7, 9), np.uint8), a.next_levels), "MASK uint8 [7, 9]"),
    (lambda a: EdgeAnswer(np.stack([a.mask] * 3, -1), a.next_levels), "MASK uint8 [144, 176, 3]"),
    (lambda a: EdgeAnswer(a.mask.astype(np.float32), a.next_levels), "MASK float32"),
    (lambda a: EdgeAnswer(None, a.next_levels), "MASK NoneType"),
    (lambda a: EdgeAnswer(a.mask, a.next_levels + 16), "NEXT_LEVELS up to"),
    (lambda a: EdgeAnswer(a.mask, a.next_levels[:2]), "NEXT_LEVELS uint8 [2,"),
    (lambda a: EdgeAnswer(a.mask, None), "NEXT_LEVELS NoneType"),
])
def test_a_bad_answer_is_an_edge_error_and_every_frame_keeps_a_mask(exported, carphone_frames, garble, message):
    tables = TableSet.default()
    edge = Garbled(exported("selfie"), tables)
    edge.garble = garble
    runtime = Runtime(edge, tables, carphone_frames[0].shape[:2],
                      RuntimeConfig(sync=True, every=1, retry_after=0.0, selection="paper", codec="stac"))
    results = [runtime.process(f) for f in carphone_frames]
    assert runtime.stats.edge_errors == runtime.stats.offloaded == 4 and runtime.stats.answers == 0
    assert all(r.mask.shape == (144, 176) and r.mask.dtype == np.uint8 for r in results)
    with pytest.raises(EdgeError, match=re.escape(message)):
        check_answer(garble(LocalEdge.segment(edge, make_codec("stac", tables).encode(carphone_frames[0]), "stac",
                                               (144, 176))), (144, 176), runtime.regions, tables.levels)


def test_an_edge_failing_every_third_request(exported):
    tables = TableSet.default()
    edge = Recording(exported("selfie"), tables, fail_every=3)
    config = RuntimeConfig(sync=True, every=4, retry_after=0.0)
    report = run(Source("carphone", max_frames=48), edge, tables, config)
    assert report["frames"] == 48
    assert report["edge_errors"] == report["offloaded"] // 3 >= 3
    assert report["answers"] == report["offloaded"] - report["edge_errors"]


def _inter_run(edge, frames, every=3, selection="uniform"):
    tables = TableSet.default()
    config = RuntimeConfig(sync=True, every=every, codec="h264:crf=28", retry_after=0.0, selection=selection)
    runtime = Runtime(edge, tables, frames[0].shape[:2], config)
    results = [runtime.process(f) for f in frames]
    runtime.close()
    return runtime, results


def test_keyframes_go_as_one_inter_coded_stream(exported, bikes_frames):
    edge = Recording(exported("selfie"), TableSet.default())
    runtime, results = _inter_run(edge, bikes_frames)
    keys = [r.index for r in results if r.offloaded]
    assert keys == [0, 3, 6] and len(edge.streams_seen) == 3
    assert {s.id for s in edge.streams_seen} == {runtime.stream_id}
    assert [s.position for s in edge.streams_seen] == [0, 1, 2] and [s.start for s in edge.streams_seen] == [
        True, False, False]
    assert runtime.stats.answers == 3 and runtime.stats.idrs == 1 and runtime.stats.edge_errors == 0
    assert len(edge.streams) == 0  # close() ended the stream: the edge let its decoder go
    # every byte counted, and a P-frame costs a fraction of the IDR
    assert runtime.stats.uplink_bytes == sum(edge.sent) and max(edge.sent[1:]) < edge.sent[0] / 2
    # a keyframe's own mask is the edge's segmentation of the decoded stream
    stream = make_codec("h264:crf=28", TableSet.default())
    units = [stream.encode(bikes_frames[i]) for i in keys]
    decoded = [stream.decode(u) for u in units]
    np.testing.assert_array_equal(results[6].mask, edge.segment_session.run(decoded[2])[:272, :640])


def test_boundary_offsets_shape_the_inter_keyframes(exported):
    frames = list(read_frames(sample_video("carphone"), max_frames=12))
    sent = {}
    for selection in ("uniform", "boundary"):
        edge = Recording(exported("selfie"), TableSet.default())
        runtime, results = _inter_run(edge, frames, 2, selection)
        assert runtime.stats.answers == runtime.stats.offloaded == 6 and runtime.stats.edge_errors == 0
        sent[selection] = edge.sent
    # the IDR goes before any answer, so without offsets; every later keyframe is coded around the carried mask
    assert sent["boundary"][0] == sent["uniform"][0]
    assert all(b != u for b, u in zip(sent["boundary"][1:], sent["uniform"][1:]))
    tables = TableSet.default()
    with pytest.raises(ValueError, match="--selection paper shapes keyframes of codec stac only"):
        Runtime(edge, tables, (144, 176), RuntimeConfig(codec="h264", selection="paper"))
    with pytest.raises(ValueError, match="--selection boundary shapes keyframes of codec stac or h264 only"):
        Runtime(edge, tables, (144, 176), RuntimeConfig(codec="jpeg:q=80", selection="boundary"))


def test_a_lost_inter_keyframe_is_followed_by_an_idr(exported, bikes_frames):
    edge = Recording(exported("selfie"), TableSet.default(), lose={2})
    runtime, results = _inter_run(edge, bikes_frames)
    # unit 1 (frame 3) lost: the edge may lack it, so the next keyframe (frame 4: frame 0 is still the newest
    # answered one) is an IDR, and the stream goes on from it
    assert [r.index for r in results if r.offloaded] == [0, 3, 4, 7]
    assert [s.start for s in edge.streams_seen] == [True, False, True, False]
    assert [s.position for s in edge.streams_seen] == [0, 1, 2, 3]
    assert runtime.stats.edge_errors == 1 and runtime.stats.idrs == 2 and runtime.stats.answers == 3
    assert results[-1].answered


def test_an_edge_restart_is_answered_need_idr_and_the_next_frame_restarts_the_stream(exported, bikes_frames):
    edge = Recording(exported("selfie"), TableSet.default(), restart={2})
    runtime, results = _inter_run(edge, bikes_frames, every=4)
    # keyframe 4 is refused (the edge no longer holds the stream); frame 5 goes at once, as an IDR
    assert [r.index for r in results if r.offloaded] == [0, 4, 5]
    assert [s.start for s in edge.streams_seen] == [True, False, True]
    assert runtime.stats.idr_requests == 1 and runtime.stats.edge_errors == 0 and runtime.stats.answers == 2
    assert runtime.stats.summary()["idr_requests"] == 1
    assert all(r.mask.shape == bikes_frames[0].shape[:2] for r in results)


def test_an_edge_that_hangs(exported):
    tables = TableSet.default()
    edge = Recording(exported("selfie"), tables, hang_every=2)
    config = RuntimeConfig(every=3, timeout=0.3, retry_after=0.0, max_in_flight=1)
    masks = []

    def slow_camera(result, live):
        masks.append(result.mask)
        time.sleep(0.03)  # a 33 fps camera, so the timeout passes during the run

    try:
        report = run(Source("carphone", max_frames=45), edge, tables, config, on_frame=slow_camera)
    finally:
        edge.release.set()
    assert report["frames"] == 45 == len(masks)
    assert report["edge_timeouts"] >= 1 and report["answers"] >= 1
    assert all(m.shape == (144, 176) for m in masks)


def test_bad_frames_still_get_masks(exported, carphone_frames, tmp_path):
    for i, frame in enumerate(carphone_frames):
        cv2.imwrite(str(tmp_path / f"frame_{i:03d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    (tmp_path / "frame_002.png").write_bytes(b"not a png")
    tables = TableSet.default()
    masks = []
    report = run(Source(str(tmp_path)), LocalEdge(exported("selfie"), tables), tables, RuntimeConfig(sync=True),
                 on_frame=lambda result, live: masks.append(result.mask))
    assert report["frames"] == 4 == len(masks) and report["bad_frames"] == 1
    np.testing.assert_array_equal(masks[2], masks[1])  # the last mask, carried over the unreadable frame


def test_cli_run_and_report(exported, tmp_path):
    folder = exported("selfie")
    result = CliRunner().invoke(runtime_main, ["run", "carphone", "--onnx-dir", str(folder), "--sync",
                                               "--max-frames", "20", "--reference", "model",
                                               "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    for key in ("frames", "keyframes", "offloaded_fps", "uplink_bytes", "uplink_kbps", "device_fps",
                "edge_errors", "miou_vs_raw"):
        assert key in report
    assert report["frames"] == 20 and 0.5 < report["miou_vs_raw"] <= 1.0
    assert "uplink_kbps" in result.output


def test_cli_errors(exported, tmp_path):
    runner = CliRunner()
    folder = str(exported("selfie"))
    bad_source = runner.invoke(runtime_main, ["run", str(tmp_path / "none.mp4"), "--onnx-dir", folder])
    assert bad_source.exit_code == 1 and "no such video file or image folder" in bad_source.output
    (tmp_path / "junk.mp4").write_bytes(b"junk")
    junk = runner.invoke(runtime_main, ["run", str(tmp_path / "junk.mp4"), "--onnx-dir", folder])
    assert junk.exit_code == 1 and "cannot read video" in junk.output
    missing = runner.invoke(runtime_main, ["run", "carphone", "--onnx-dir", folder,
                                           "--tables", str(tmp_path / "t.json")])
    assert missing.exit_code == 1 and "cannot read table set" in missing.output
    base = TableSet.default()
    other = TableSet(base.tables, base.bounds, base.gradients, base.bound, base.num_coeffs,
                     {"name": "selfie", "sha256": "0" * 64})
    other.save(tmp_path / "other.json")
    mismatch = runner.invoke(runtime_main, ["run", "carphone", "--onnx-dir", folder,
                                            "--tables", str(tmp_path / "other.json")])
    assert mismatch.exit_code == 1 and "calibrated for selfie" in mismatch.output
    for option, value, message in (("--flow-width", "8", "--flow-width must be at least 16 px"),
                                   ("--fps", "0", "--fps must be positive"), ("--every", "0", "--every must be"),
                                   ("--timeout", "0", "--timeout must be positive"),
                                   ("--max-frames", "-3", "--max-frames must be at least 1"),
                                   ("--labels", str(tmp_path / "nowhere"), "does not exist")):
        bad = runner.invoke(runtime_main, ["run", "carphone", "--onnx-dir", folder, option, value])
        assert bad.exit_code != 0 and message in bad.output and "Traceback" not in bad.output, (option, bad.output)
    down = runner.invoke(runtime_main, ["run", "carphone", "--edge", "grpc://127.0.0.1:9", "--wait-edge", "1"])
    assert down.exit_code == 1 and "not ready after 1 s" in down.output and "--offline-ok" in down.output


def test_no_flags_builds_the_default_graphs_and_tables_once(tmp_path, monkeypatch):
    import export.defaults

    monkeypatch.setattr(export.defaults, "cache_dir", lambda: tmp_path)  # weights and clips stay in the real cache
    first = CliRunner().invoke(runtime_main, ["run", "carphone", "--max-frames", "4", "--sync",
                                              "--report", str(tmp_path / "r.json")])
    assert first.exit_code == 0, first.output
    assert "building the selfie model's graphs and tables once" in first.output
    built = next(tmp_path.glob("build-selfie-*"))
    assert {"stac_head.onnx", "segment.onnx", "model.json", "tables.json", "summary.md"} <= {p.name for p in
                                                                                          built.iterdir()}
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["answers"] >= 1 and report["tables_id"] == TableSet.load(built / "tables.json").id.hex()
    again = CliRunner().invoke(runtime_main, ["run", "carphone", "--max-frames", "2", "--reference", "model"])
    assert again.exit_code == 0 and "building" not in again.output and "miou_vs_raw" in again.output


def test_unreachable_edge_with_offline_ok(tmp_path):
    result = CliRunner().invoke(runtime_main, ["run", "carphone", "--edge", "http://127.0.0.1:9", "--wait-edge",
                                               "0.5", "--offline-ok", "--max-frames", "10", "--timeout", "0.5",
                                               "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["frames"] == 10 and report["edge_errors"] >= 1 and report["answers"] == 0


def test_bench_device_prints_the_ratio(exported):
    from bench.cli import main as bench_main

    result = CliRunner().invoke(bench_main, ["device", "--onnx-dir", str(exported("selfie")), "--size", "352x176",
                                             "--max-frames", "10", "--flow-width", "176"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("10 frames 352x176")
    loop = next(line for line in lines if line.startswith("loop, stac uniform, flow at 176x88")).split()
    ratio, keyframes, offloaded, score = float(loop[-4].rstrip("x")), int(loop[-3]), int(loop[-2]), float(loop[-1])
    # the replayed edge answers every keyframe the gate picks, and the masks are scored against the raw frames
    assert ratio > 0 and keyframes >= 1 and offloaded == keyframes and 0 < score <= 1
    assert "went unanswered" not in result.output


def test_recorded_edge_replays_the_real_answers_and_refuses_other_bytes(exported):
    from bench.device_bench import RecordedEdge, device_loop

    tables = TableSet.default()
    frames = list(read_frames(sample_video("carphone"), 12))
    edge = LocalEdge(exported("selfie"), tables)
    config = RuntimeConfig(selection="paper", psnr=30.0, codec="stac")  # level maps from the answers: in time
    recorded = RecordedEdge.record(frames, edge, tables, config, latency_ms=50.0)
    timing = device_loop(frames, recorded, tables, config, 50.0)
    assert timing.keyframes >= 2 and timing.offloaded == len(recorded.answers) and recorded.misses == 0
    data, size = make_codec("stac", tables).encode(frames[3]), frames[3].shape[:2]
    with pytest.raises(EdgeError, match="not recorded"):
        recorded.segment(data + b"\0", "stac", size)
    assert recorded.misses == 1 and recorded.table_sets() == [tables.id.hex()]


@pytest.mark.parametrize("options, loop, cost", [
    (["--selection", "uniform", "--selection", "boundary"], "loop, stac boundary, flow at 176x88", ("boundary map",)),
    (["--codec", "stac", "--codec", "h264:crf=28"], "loop, h264:crf=28 boundary, flow at 176x88",
     ("boundary offsets", "h264:crf=28 P-frame"))])
def test_bench_device_times_selections_and_codecs(exported, options, loop, cost):
    from bench.cli import main as bench_main

    result = CliRunner().invoke(bench_main, ["device", "--onnx-dir", str(exported("selfie")), "--size", "352x176",
                                             "--max-frames", "6", "--flow-width", "176", *options])
    assert result.exit_code == 0, result.output
    assert any(line.startswith(loop) for line in result.output.splitlines())
    assert "went unanswered" not in result.output
    costs = next(line for line in result.output.splitlines() if line.startswith("per keyframe"))
    assert "STAC encode" in costs and all(c in costs for c in cost)


def test_the_gate_follows_the_accuracy_target(exported):
    from stac.gate import GATE_RANGE_DB, AccuracyGate, agreement
    from stac.video import read_frames, sample_video

    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 10:20] = 1
    assert agreement(mask, mask) == 1.0 and agreement(mask, np.roll(mask, 5, axis=1)) < 0.8
    gate = AccuracyGate(0.9, 26.0)
    assert gate.update(0.8) > 26.0 and gate.update(1.0) < gate.update(0.7)
    assert AccuracyGate(0.9, 26.0, gain=1e6).update(0.0) == GATE_RANGE_DB[1]
    with pytest.raises(ValueError, match="mIoU"):
        AccuracyGate(1.5, 26.0)
    edge = LocalEdge(exported("selfie"), TableSet.default())
    gates, frames = {}, list(read_frames(sample_video("carphone"), max_frames=12))  # a person moving
    for target in (0.2, 0.999):  # one every carried mask meets, one none can
        runtime = Runtime(edge, TableSet.default(), frames[0].shape[:2],
                          RuntimeConfig(sync=True, psnr=40.0, target=target, codec="h264:crf=28"))
        for frame in frames:
            runtime.process(frame)
        runtime.close()
        assert runtime.stats.agreements and all(0 <= a <= 1 for a in runtime.stats.agreements)
        gates[target] = runtime.gate_db
    assert gates[0.2] < 40.0 < gates[0.999]
    with pytest.raises(ValueError, match="--target or --every"):
        Runtime(edge, TableSet.default(), (144, 176), RuntimeConfig(target=0.9, every=3))
