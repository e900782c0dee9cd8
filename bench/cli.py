"""stac-bench: benchmarks that print numbers (speed targets live here, never in tests)."""
from __future__ import annotations

import dataclasses
import json
import signal
import statistics
import sys
from pathlib import Path

import click

from device_runtime.runtime import PAPER_GATE_DB, SELECTIONS, RuntimeConfig
from evaluation.methods import DEVICE_MS, EDGE_MS
from stac.codec import make_codec
from stac.commands import cli_errors, tables_option
from stac.contract import HEAD_GRAPH, MAX_BATCH, SEGMENT_GRAPH
from stac.edge.client import EdgeError
from stac.flow import PRESETS
from stac.link import Link
from stac.tables import TableSet
from stac.video import parse_size, read_frames, resolve_source, sample_video, video_fps

from .codec_bench import format_table, run_codec_bench
from .head_bench import format_timings, time_head

DEFAULT_CODECS = ("jpeg:q=90", "jpeg:q=90,subsampling=444", "grace", "stac", "h264:crf=23")


def _check_edge_holds(url: str, tables: TableSet, timeout: float = 10.0) -> None:
    """Return once the edge at ``url`` answers and holds ``tables`` (the handshake), else raise."""
    from stac.edge.client import TritonEdge, check_table_set

    edge = TritonEdge(url, timeout)
    try:
        edge.wait_ready(30)
        check_table_set(edge, tables)
    finally:
        edge.close()


def _size(value: str | None) -> tuple[int, int] | None:
    try:
        return None if value is None else parse_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.group()
def main() -> None:
    """Benchmarks for STAC."""


@main.command()
@click.argument("video", required=False)
@click.option("--codec", "specs", multiple=True, help="codec spec, repeatable, e.g. jpeg:q=90, stac:level=8, "
              "grace:b=1e5, h264:crf=23 (default: a set of all four)")
@tables_option("tables.json (default: the built-in Annex K set, see stac.tables.TableSet.default)")
@click.option("--max-frames", type=int, default=30, show_default=True)
@click.option("--size", help="resize frames to WIDTHxHEIGHT, e.g. 2048x1024")
@click.option("--fps", type=float, help="frame rate for Kbps (default: the video's)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write the results as JSON")
@click.option("--save", "save_dir", type=click.Path(file_okay=False), help="write every encoded frame's bytes")
def codec(video, specs, tables, max_frames, size, fps, json_path, save_dir) -> None:
    """Bytes, Kbps, PSNR and encode/decode time per codec on VIDEO (default: the bikes sample clip)."""
    with cli_errors():
        path = resolve_source(video) if video else sample_video("bikes")
        codecs = [make_codec(s, tables) for s in (specs or DEFAULT_CODECS)]
        if not any(c.name == "jpeg" for c in codecs):
            codecs.insert(0, make_codec("jpeg:q=90", tables))
        frames = list(read_frames(path, max_frames, _size(size)))
        rate = fps or video_fps(path)
    h, w = frames[0].shape[:2]
    click.echo(f"{path.name}: {len(frames)} frames {w}x{h} at {rate:g} fps; table set {tables.id.hex()} "
               f"({tables.model.get('name')})")
    with click.progressbar(length=len(frames) * len(codecs), label="encoding", file=sys.stderr) as bar:
        with cli_errors():  # a frame a codec refuses (e.g. larger than its decoder accepts)
            results = run_codec_bench(codecs, frames, rate, Path(save_dir) if save_dir else None,
                                      lambda: bar.update(1))
    click.echo(format_table(results))
    if json_path:
        doc = {"video": str(path), "frames": len(frames), "width": w, "height": h, "fps": rate,
               "tables_id": tables.id.hex(), "results": [dataclasses.asdict(r) for r in results]}
        Path(json_path).write_text(json.dumps(doc, indent=1))


@main.command()
@click.option("--model", "model_name", default="selfie", show_default=True)
@click.option("--onnx-dir", type=click.Path(file_okay=False, path_type=Path),
              help="folder with stac_head.onnx and segment.onnx (default: export the model into a temp folder)")
@click.option("--size", "sizes", multiple=True, help="WIDTHxHEIGHT, repeatable (default: 2048x1024 and the "
              "model's native size)")
@click.option("--runs", type=int, default=5, show_default=True)
@click.option("--threads", type=int, help="onnxruntime intra-op threads (default: all cores)")
@click.option("--provider", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@tables_option()
@click.option("--profile", is_flag=True, help="also the time per ONNX operator type (onnxruntime's profiler)")
@click.option("--batch", type=click.IntRange(1, MAX_BATCH), default=1, show_default=True,
              help="also each graph's milliseconds per frame in runs of this many frames")
def head(model_name, onnx_dir, sizes, runs, threads, provider, tables, profile, batch) -> None:
    """Milliseconds of the STAC head vs the SEGMENT graph, same model, same frame (bikes clip), same run; with
    --batch, per frame in batched runs against one frame a run."""
    import tempfile

    from stac.inference import HeadSession, SegmentSession, model_info

    providers = ["CUDAExecutionProvider"] if provider == "cuda" else ["CPUExecutionProvider"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = onnx_dir or Path(tmp)
        if onnx_dir is None:
            from stac.models.to_onnx import export_model  # torch is only needed when exporting here

            click.echo(f"exporting {model_name} ...", err=True)
            export_model(model_name, folder)
        info = model_info(folder)
        frame = next(iter(read_frames(sample_video("bikes"), 1)))
        wanted = [_size(s) for s in sizes] or [(1024, 2048), tuple(info["native_size"])]
        timings = []
        for size in wanted:  # profiling sessions per size: a profile covers a session's whole life
            traces = (str(Path(tmp) / "head"), str(Path(tmp) / "segment")) if profile else (None, None)
            head_session = HeadSession(folder / HEAD_GRAPH, threads, providers, traces[0])
            segment_session = SegmentSession(folder / SEGMENT_GRAPH, threads, providers, traces[1])
            timings.append(time_head(head_session, segment_session, frame, size, tables, runs, batch))
    click.echo(f"model {info['name']}, {provider}, threads {threads or 'default'}, median of {runs}")
    click.echo(format_timings(timings))


@main.command()
@click.option("--onnx-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="exported graphs for the local edge (export/build.py --onnx-only)")
@click.option("--video", default="bikes", show_default=True, help="sample clip name or video file")
@click.option("--size", default="2048x1024", show_default=True)
@click.option("--max-frames", type=int, default=60, show_default=True)
@click.option("--flow-width", "flow_widths", type=int, multiple=True, help="repeatable (default: 256, 512)")
@tables_option()
@click.option("--selection", "selections", type=click.Choice(SELECTIONS), multiple=True,
              help="level maps or offsets, repeatable (default: each codec's own, ROUTE_DEFAULTS)")
@click.option("--codec", "codecs", multiple=True, help="keyframe codecs, repeatable (default: stac)")
@click.option("--edge-latency", type=float, default=50.0, show_default=True,
              help="ms from a keyframe's capture to its answer (the network and a GPU edge)")
def device(onnx_dir, video, size, max_frames, flow_widths, tables, selections, codecs, edge_latency) -> None:
    """fps of the whole device loop (flow, propagation, gating, every gated keyframe's encode) vs DIS ULTRAFAST
    alone, and its masks' mIoU against the model on every raw frame.

    The edge costs this process no CPU: its answers to the loop's keyframes are computed first (the same loop
    against the local graphs, untimed) and replayed, each --edge-latency after its keyframe, as from another
    machine."""
    from stac.edge.client import LocalEdge

    from .device_bench import RecordedEdge, device_loop, dis_alone, keyframe_costs
    from .device_bench import format_timings as format_device

    if not edge_latency >= 0:
        raise click.BadParameter(f"must be >= 0, got {edge_latency:g}", param_hint="--edge-latency")
    with cli_errors():
        frames = list(read_frames(resolve_source(video), max_frames, _size(size)))
        edge = LocalEdge(onnx_dir, tables)
        reference = [edge.segment_session.run(frame) for frame in frames]
    baseline = dis_alone(frames)
    timings, misses = [], 0
    with cli_errors():
        for config in (RuntimeConfig(flow_width=w, selection=s, codec=c) for c in (codecs or ("stac",))
                       for s in (selections or (None,)) for w in (flow_widths or (256, 512))):
            recorded = RecordedEdge.record(frames, edge, tables, config, edge_latency)
            timings.append(device_loop(frames, recorded, tables, config, edge_latency, reference))
            misses += recorded.misses
    h, w = frames[0].shape[:2]
    click.echo(f"{len(frames)} frames {w}x{h} of {video} at {RuntimeConfig.fps:g} fps, each answer {edge_latency:g} ms "
               f"after its keyframe's capture, replayed from the local edge")
    click.echo(format_device(timings, baseline))
    if misses:  # the runs should agree exactly; a miss means the loop is not deterministic
        click.echo(f"{misses} keyframes differed from the recorded run's and went unanswered")
    inter = [c for c in codecs if make_codec(c, tables).route == "h264"]
    if "boundary" in selections or inter:
        costs = keyframe_costs(frames[:10], edge, tables, inter)
        click.echo("per keyframe (median ms): " + ", ".join(f"{name} {ms:.1f}" for name, ms in costs.items()))


@main.command()
@click.argument("videos", nargs=-1)
@click.option("--onnx-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="exported graphs (stac-export --onnx-only): the masks are the SEGMENT graph's")
@click.option("--size", "sizes", multiple=True, help="WIDTHxHEIGHT for every clip too, repeatable (default: 2048x1024)")
@click.option("--max-frames", type=int, default=30, show_default=True)
def answers(videos, onnx_dir, sizes, max_frames) -> None:
    """Bytes and CPU of the edge's answers: masks of VIDEOs (default: the evaluation clips and bikes) coded as the edge
    codes them, against raw class ids and deflate, each at its own size and at every --size."""
    from stac.inference import SegmentSession

    from .answers_bench import answer_costs, format_costs

    with cli_errors():
        session = SegmentSession(onnx_dir / SEGMENT_GRAPH)
        wanted = [None] + [_size(s) for s in (sizes or ("2048x1024",))]
        costs = []
        for video in videos or ("carphone", "megamind", "vtest", "bikes"):
            for size in wanted:
                frames = list(read_frames(resolve_source(video), max_frames, size))
                h, w = frames[0].shape[:2]
                costs.append(answer_costs(f"{video} {w}x{h}", [session.run(f) for f in frames]))
    click.echo(f"median per answer over {max_frames} frames of each clip")
    click.echo(format_costs(costs))


@main.command()
@click.argument("url")
@click.option("--onnx-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="the same graphs, for the in-process comparison (export/build.py writes OUT_onnx)")
@tables_option("the table set the edge holds", required=True)
@click.option("--size", default="640x272", show_default=True, help="keyframe WIDTHxHEIGHT (bikes clip)")
@click.option("--requests", type=int, default=10, show_default=True, help="per device")
@click.option("--devices", "device_counts", type=int, multiple=True, help="repeatable (default: 1, 2, 4)")
def edge(url, onnx_dir, tables, size, requests, device_counts) -> None:
    """Keyframe round-trip latency and throughput through URL vs the same work in-process."""
    from stac.edge.client import LocalEdge, TritonEdge

    from .edge_bench import format_timings as format_edge
    from .edge_bench import hammer, model_times

    with cli_errors(EdgeError):
        _check_edge_holds(url, tables)
        frame = next(iter(read_frames(sample_video("bikes"), 1, _size(size))))
    data = make_codec("stac", tables).encode(frame)
    shape = frame.shape[:2]
    remote, local = [], []
    for n in device_counts or (1, 2, 4):
        remote.append(hammer(lambda: TritonEdge(url), data, shape, n, requests, url))
        local.append(hammer(lambda: LocalEdge(onnx_dir, tables), data, shape, n, requests, "in-process"))
    click.echo(f"keyframe {shape[1]}x{shape[0]}, {len(data)} B, {requests} requests per device")
    click.echo(format_edge(remote, local))
    with cli_errors(EdgeError):
        times = model_times(url)
    click.echo("server ms per request, since it started: " + ", ".join(f"{m} {ms:.2f}" for m, ms in times.items()))


@main.command()
@click.argument("url")
@tables_option("the table set the edge holds", required=True)
@click.option("--devices", "devices_spec", default="1,2,4,8", show_default=True, help="comma-separated device counts")
@click.option("--requests", type=int, default=20, show_default=True, help="per device")
@click.option("--sizes", default="176x144,1280x720", show_default=True,
              help="comma-separated keyframe sizes (bikes clip), sent in turn by every device")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="seconds per request")
@click.option("--capacity", is_flag=True, help="instead: each route's recorded requests replayed by more and more "
              "devices, the most whose p95 delay meets --deadline, then twice that many (overload)")
@click.option("--route", "routes", multiple=True, help="with --capacity, repeatable (default: all)")
@click.option("--clip", default="bikes", show_default=True, help="with --capacity: the clip the routes are recorded on")
@click.option("--max-frames", type=int, default=150, show_default=True, help="with --capacity: of the clip")
@click.option("--deadline", type=float, default=200.0, show_default=True, help="with --capacity: p95 delay, ms")
@click.option("--seconds", type=float, default=10.0, show_default=True, help="with --capacity: per trial")
@click.option("--most", type=int, default=64, show_default=True, help="with --capacity: devices tried at most")
@click.option("--pid", type=int, help="the server's process id: its memory after each device count (with --capacity: "
              "its CPU time per device)")
@click.option("--sweep", is_flag=True, help="with --capacity: one trial at each --devices count instead of the search")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="with --capacity: write every trial's row here")
def load(url, tables, devices_spec, requests, sizes, timeout, capacity, routes, clip, max_frames, deadline, seconds,
         most, pid, sweep, json_path) -> None:
    """Many devices at once: STAC keyframe latency (p50/p95/p99 per size), throughput and errors through URL; with
    --capacity, how many devices of each route the edge holds within a deadline, and what it does at twice that."""
    from stac.edge.client import TritonEdge

    from .edge_bench import format_load
    from .edge_bench import load as run_load
    from .fuzz import server_rss

    with cli_errors(EdgeError):
        counts = [int(v) for v in devices_spec.split(",") if v.strip()]
        if not counts or min(counts) < 1 or requests < 1:
            raise ValueError("--devices and --requests must be at least 1")
    if capacity:
        _capacity(url, tables, routes, clip, max_frames, deadline, seconds, most, pid, json_path,
                  counts if sweep else None)
        return
    with cli_errors(EdgeError):
        _check_edge_holds(url, tables, timeout)
        keyframes = {}
        for spec in sizes.split(","):
            frame = next(iter(read_frames(sample_video("bikes"), 1, _size(spec.strip()))))
            keyframes[spec.strip()] = (make_codec("stac", tables).encode(frame), frame.shape[:2])
    results = []
    for n in counts:
        results.append(run_load(lambda: TritonEdge(url, timeout), keyframes, n, requests))
        rss = server_rss(pid)
        results[-1].rss_mb = rss / 2 ** 20 if rss is not None else None
    click.echo(f"{url}: keyframes {', '.join(f'{k} ({len(v[0])} B)' for k, v in keyframes.items())}, "
               f"{requests} per device")
    click.echo(format_load(results))


def _capacity(url, tables, routes, clip, max_frames, deadline, seconds, most, pid, json_path, sweep=None) -> None:
    from .capacity import ROUTES, capacity, record, replay

    with cli_errors(EdgeError):
        if unknown := set(routes) - set(ROUTES):
            raise ValueError(f"unknown route {', '.join(sorted(unknown))}: the routes are {', '.join(ROUTES)}")
        if deadline <= 0 or seconds <= 0 or most < 1:
            raise ValueError("--deadline and --seconds must be positive, --most at least 1")
        _check_edge_holds(url, tables)
    rows = []

    def show(trial, label=""):
        row = trial.row(deadline)
        rows.append({**row, "trial": label or "search"})
        p95 = "-" if row["p95_ms"] is None else f"{row['p95_ms']:.0f}"
        cpu = "-" if row["edge_cpu_per_device"] is None else f"{row['edge_cpu_per_device']:.3f}"
        refused = "-" if row["refusal_p95_ms"] is None else f"{row['refusal_p95_ms']:.0f}"
        batch = "-" if row["batch"] is None else f"{row['batch']:.2f}"
        click.echo(f"{row['route']:17} {row['devices']:7d} {p95:>7} {row['answered']:8d} {row['failed']:6d} "
                   f"{row['refused']:7d} {refused:>9} {row['skipped']:7d} {cpu:>8} {batch:>5} {label}")

    click.echo(f"{'route':17} {'devices':>7} {'p95 ms':>7} {'answered':>8} {'failed':>6} {'refused':>7} "
               f"{'refuse ms':>9} {'skipped':>7} {'cpu/dev':>8} {'batch':>5}")
    for route in routes or ROUTES:
        with cli_errors(EdgeError):
            recording = record(url, tables, clip, route, max_frames)
        click.echo(f"{route}: {len(recording.requests)} requests in {recording.seconds:.1f} s of {clip} "
                   f"({len(recording.requests) / recording.seconds:.1f}/s, {recording.kbps:.0f} Kbps)")
        if sweep:
            for n in sweep:
                show(replay(url, recording, n, seconds, pid), "sweep")
            continue
        held, _ = capacity(url, recording, deadline, seconds, pid, most, tick=show)
        click.echo(f"{route}: {held} devices within p95 {deadline:g} ms")
        rows.append({"route": route, "trial": "capacity", "devices": held, "deadline_ms": deadline,
                     "requests_per_s": len(recording.requests) / recording.seconds, "kbps": recording.kbps})
        if held:
            show(replay(url, recording, 2 * held, seconds, pid), "2x overload")
    if json_path:
        click.open_file(json_path, "w").write(json.dumps(rows, indent=1))


@main.command()
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), default=Path("triton_models"),
              show_default=True)
@tables_option("the repository's table set", default="triton_models/tables.json")
@click.option("--servers", type=int, default=2, show_default=True)
@click.option("--route", default="default", show_default=True, help="whose recorded requests the devices replay")
@click.option("--clip", default="bikes", show_default=True)
@click.option("--max-frames", type=int, default=150, show_default=True, help="of the clip")
@click.option("--devices", type=int, default=4, show_default=True)
@click.option("--seconds", type=float, default=15.0, show_default=True, help="measured")
@click.option("--kill-after", type=float, default=5.0, show_default=True, help="seconds into the measured window")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True))
def failover(repo, tables, servers, route, clip, max_frames, devices, seconds, kill_after, json_path) -> None:
    """Start --servers servers on REPO behind the proxy, replay --route from --devices devices through it, kill one
    server: how long until every device is answered again, and what was lost."""
    from stac.edge.server import ServerError

    from .capacity import ROUTES
    from .failover import failover as run_failover
    from .failover import format_failover

    with cli_errors(EdgeError, ServerError):
        if route not in ROUTES:
            raise ValueError(f"unknown route {route}: the routes are {', '.join(ROUTES)}")
        if servers < 2 or devices < 1 or not 0 < kill_after < seconds:
            raise ValueError("--servers must be at least 2, --devices at least 1, --kill-after within --seconds")
        result = run_failover(repo, tables, route, clip, devices, servers, kill_after, seconds, max_frames)
    click.echo(format_failover(result))
    if json_path:
        click.open_file(json_path, "w").write(json.dumps(result.row(), indent=1))


@main.command()
@click.argument("url")
@tables_option("the table set the edge holds (the valid STAC keyframe is coded with it)", required=True)
@click.option("--requests", type=int, default=10000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--timeout", type=float, default=10.0, show_default=True, help="seconds before a request is a hang")
@click.option("--pid", type=int,
              help="the server's process id, for its memory (and its stubs') at each quarter of the run")
def fuzz(url, tables, requests, seed, timeout, pid) -> None:
    """Mutated STAC and JPEG keyframes (bit flips, truncation, header edits, bombs, random bytes) to URL:
    errors, successes, hangs and crashes, and the server's memory."""
    from .fuzz import format_report
    from .fuzz import fuzz as run_fuzz

    with cli_errors(EdgeError):
        if requests < 1 or timeout <= 0:
            raise ValueError("--requests must be at least 1 and --timeout positive")
        _check_edge_holds(url, tables, timeout)
    frame = next(iter(read_frames(sample_video("carphone"), 1)))
    keyframes = {kind: (make_codec(spec, tables).encode(frame), frame.shape[:2])
                 for kind, spec in (("stac", "stac"), ("jpeg", "jpeg:q=80"))}
    with click.progressbar(length=requests, label="fuzzing", file=sys.stderr) as bar:
        report = run_fuzz(url, keyframes, requests, seed, timeout, pid, lambda: bar.update(1))
    click.echo(format_report(report))
    if report.total("crash") or report.total("hang"):
        raise SystemExit(1)


@main.command()
@click.argument("url")
@tables_option("the table set the edge holds (STAC keyframes are coded with it)", required=True)
@click.option("--requests", type=int, default=50000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="of the mutants")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="seconds before a request is a hang")
@click.option("--pid", type=int,
              help="the server's process id, for its memory (and its stubs') at every tenth of the run")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True), help="write the report here")
def soak(url, tables, requests, seed, timeout, pid, json_path) -> None:
    """A long mixed run to URL (valid STAC, JPEG and H.264 keyframes of several sizes, streams started, ended and
    abandoned, mutants): does the server's memory level off? Exits 1 if a valid keyframe failed or the server died."""
    from .soak import STREAM_UNITS, Keyframes, format_soak
    from .soak import soak as run_soak

    with cli_errors(EdgeError):
        if requests < 1 or timeout <= 0:
            raise ValueError("--requests must be at least 1 and --timeout positive")
        _check_edge_holds(url, tables, timeout)
    keyframes = Keyframes.code(list(read_frames(sample_video("bikes"), STREAM_UNITS)), tables)
    with click.progressbar(length=requests, label="soaking", file=sys.stderr) as bar:
        report = run_soak(url, keyframes, requests, seed, timeout, pid, lambda: bar.update(1))
    click.echo(format_soak(report))
    if json_path:
        click.open_file(json_path, "w").write(json.dumps(report.to_json(), indent=1))
    if report.failed():
        raise SystemExit(1)


@main.command()
@click.argument("url")
@click.option("--count", type=int, default=20, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True), help="write the times here")
def ping(url, count, json_path) -> None:
    """The round trip to the edge at URL (grpc://HOST:PORT) as the application's stack sees it: gRPC health calls
    over an open connection (ms)."""
    from .link_bench import ping as run_ping

    with cli_errors(EdgeError):
        if count < 1:
            raise ValueError("--count must be at least 1")
        try:
            times = run_ping(url, count)
        except Exception as e:  # tritonclient's errors name the address
            raise EdgeError(f"edge {url} does not answer: {e}") from None
    if json_path:
        click.open_file(json_path, "w").write(json.dumps({"url": url, "ms": times}))
    else:
        click.echo(f"{url}: median {statistics.median(times):.2f} ms, min {min(times):.2f}, max {max(times):.2f} "
                   f"over {count} calls")


@main.command()
@click.argument("sources", nargs=-1)
@click.option("--onnx-dir", type=click.Path(file_okay=False, path_type=Path),
              help="exported graphs the edge serves (default: the default model's, built once into the cache)")
@tables_option("tables.json (default: --onnx-dir's tables.json, else the built-in set)", builtin=False)
@click.option("--rate", "rates", multiple=True, help="uplink rate (bit/s with k, M, G), repeatable "
              "(default: 1M, 4M, 20M)")
@click.option("--trace", "trace_spec", help="the uplink follows a trace instead: step (5 -> 1 -> 5 Mbps, 5 s each; "
              "step:HIGH/LOW between other rates), bursty, or a Mahimahi trace file")
@click.option("--down", help="downlink rate (default: the uplink's, or 20M under a trace)")
@click.option("--codec", default=RuntimeConfig.codec, show_default=True, help="the runtime's --codec")
@click.option("--kbps", "budgets", multiple=True, help="the runtime's --kbps, repeatable (a run each): a budget, or "
              "auto; under a trace, auto is compared with every fixed budget given, stretch by stretch")
@click.option("--max-delay", type=float, default=RuntimeConfig.max_delay, show_default=True,
              help="the runtime's --max-delay (ms), and the target recovery_s is measured against")
@click.option("--fps", type=float, help="deliver the frames at this rate (the runtime's --fps)")
@click.option("--max-frames", type=int, help="frames of each source (default: all)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="write the rows here")
@click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path), default=Path("link_bench.log"),
              show_default=True, help="the runtime's output (the edge's beside it, .edge.log)")
def link(sources, onnx_dir, tables, rates, trace_spec, down, codec, budgets, max_delay, fps, max_frames, json_path,
         log_path) -> None:
    """Answer delays measured through a kernel-shaped link (network namespaces, tc tbf; needs root) beside the link
    model's prediction for the same run: the real stac-runtime, paced, against a real Triton edge, per SOURCE
    (default: carphone 176x144, megamind 720x528), rate and --kbps. Under a trace, also per stretch of one rate:
    uplink used, p95 delay, real-time mIoU; the time to recover from each step; and for --kbps auto, the link's
    utilization where the video needs it and the gap to the best fixed --kbps."""
    import math
    import tempfile

    from device_runtime.sources import Source
    from stac.edge.repository import write_repository
    from stac.edge.server import ServerError, TritonServer
    from stac.inference import SegmentSession, model_info
    from stac.link import Trace, parse_rate

    from .link_bench import compare_over_trace, format_rows, format_trace_rows, measure, over_trace
    from .netns import NetnsError, ShapedLink, unavailable

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed harness still removes its namespace

    with cli_errors(ServerError, NetnsError):
        if trace_spec and rates:
            raise ValueError("give --rate or --trace, not both")
        reason = unavailable()
        if reason:
            raise ValueError(f"no shaped link on this machine: {reason}")
        trace = Trace.named(trace_spec) if trace_spec else None
        ups = [trace] if trace else [parse_rate(r, "--rate") for r in rates or ("1M", "4M", "20M")]
        down_bps = parse_rate(down, "--down") if down else None
        RuntimeConfig(kbps="auto", max_delay=max_delay)  # what the runtime would refuse, before the edge starts
        if onnx_dir is None:
            from export.defaults import default_build

            onnx_dir = default_build(lambda message: click.echo(message + " ...", err=True))
        if tables is None:  # the build's own, as stac-runtime takes it; else the built-in set
            built = onnx_dir / "tables.json"
            tables = TableSet.load(built) if built.is_file() else TableSet.default()
        args = ["--codec", codec, "--max-delay", str(max_delay)] + \
            (["--max-frames", str(max_frames)] if max_frames else []) + (["--fps", str(fps)] if fps else [])
        rows = []
        with tempfile.TemporaryDirectory() as tmp, ShapedLink(20e6, 20e6) as shaped:
            tables.save(Path(tmp) / "tables.json")
            args += ["--tables", str(Path(tmp) / "tables.json")]
            repo = write_repository(Path(tmp) / "repo", onnx_dir, tables)
            trace_prefix = Path(tmp) / "trace.json"
            click.echo(f"edge at {shaped.host_address}, device namespace {shaped.namespace} at "
                       f"{shaped.device_address}; starting the edge ...", err=True)
            with TritonServer(repo, address=shaped.host_address, trace_path=trace_prefix, ready_timeout=240,
                              log_path=log_path.with_suffix(".edge.log")) as server:
                url = f"grpc://{server.grpc_url}"
                for source in sources or ("carphone", "megamind"):
                    found = []
                    for up in ups:
                        for kbps in budgets or (None,):
                            label = trace.name if trace else f"{up / 1e6:g}M"
                            click.echo(f"{source} over {label}{f', --kbps {kbps}' if kbps else ''} ...", err=True)
                            found.append(measure(shaped, url, trace_prefix, source, args, up,
                                                 down_bps or (20e6 if trace else up), label, log_path, kbps))
                            click.echo(format_rows([found[-1].row()]).splitlines()[-1], err=True)
                    if trace:  # the same runs' masks against the model's on every raw frame
                        session = SegmentSession(onnx_dir / "segment.onnx")
                        reference = [session.run(f) for f in Source(source, max_frames, fps).frames()]
                        classes = len(model_info(onnx_dir)["classes"])
                        demand = None
                        if "auto" in budgets:
                            click.echo(f"{source}, --kbps auto unshaped (what the video sends) ...", err=True)
                            demand = measure(shaped, url, trace_prefix, source, args, math.inf, math.inf, "none",
                                             log_path, "auto").report["up_kbps"]
                        stretched = [{**m.row(), **over_trace(m, trace, reference, classes, max_delay)}
                                     for m in found]
                        compare_over_trace(stretched, demand)
                        rows += stretched
                    else:
                        rows += [m.row() for m in found]
    click.echo(format_rows(rows))
    if trace:
        click.echo(format_trace_rows(rows))
    if json_path:
        json_path.write_text(json.dumps(rows, indent=1))


@main.command("eval")
@click.argument("sources", nargs=-1)
@click.option("--model", "model_name", default="selfie", show_default=True, help="model to export (without --onnx-dir)")
@click.option("--weights", type=click.Path(dir_okay=False), help="checkpoint for models without shipped weights")
@click.option("--onnx-dir", type=click.Path(file_okay=False, path_type=Path),
              help="graphs from `export/build.py --onnx-only` (default: export --model into a temp folder)")
@tables_option("tables.json (default: calibrate now with stac-calibrate's defaults, on the calibration clips)",
               builtin=False)
@click.option("--labels", type=click.Path(file_okay=False), help="class-id PNGs in frame order, for one SOURCE")
@click.option("--frames", type=int, default=30, show_default=True,
              help="frames scored per source at the codec level (labelled frames for datasets)")
@click.option("--step", type=int, default=4, show_default=True,
              help="codec level: every STEP-th frame; the system level runs every frame of that span")
@click.option("--levels", "levels_spec", default="codec,system", show_default=True,
              help="comma-separated: codec, system, realtime (the device loop over each --link), ablation (paper Fig. "
              "6-8 and the gate threshold)")
@click.option("--link", "links", multiple=True, help="realtime level: a link, repeatable (up=4M,down=20M,rtt=60ms or a "
              "named one; default: constrained, lte, wifi)")
@click.option("--device-ms", type=float, default=DEVICE_MS, show_default=True,
              help="realtime level: the device's coding time per keyframe")
@click.option("--edge-ms", type=float, help="realtime level: the edge's time per keyframe (default: "
              + ", ".join(f"{route} {ms:g}" for route, ms in EDGE_MS.items()) + ")")
@click.option("--max-in-flight", type=int, default=RuntimeConfig.max_in_flight, show_default=True,
              help="realtime level: keyframes awaiting answers at once")
@click.option("--flow-width", type=int, default=RuntimeConfig.flow_width, show_default=True)
@click.option("--preset", type=click.Choice(list(PRESETS)), default=RuntimeConfig.preset, show_default=True)
@click.option("--targets", default="0.95,0.97,0.98", show_default=True, help="mIoU targets of the comparison")
@click.option("--methods", "methods_spec", help="comma-separated: only these methods (default: all of each level)")
@click.option("--gate", type=float, default=PAPER_GATE_DB, show_default=True, help="PSNR gate (dB) of the system level")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("eval_out"),
              show_default=True, help="results.json, results.csv, figures, report.md")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="also write results here")
def eval_command(sources, model_name, weights, onnx_dir, tables, labels, frames, step, levels_spec, links, device_ms,
                 edge_ms, max_in_flight, flow_width, preset, targets, methods_spec, gate, out, json_path) -> None:
    """Rate vs accuracy of STAC, GRACE, JPEG and H.264 on SOURCEs (sample clip names, video files, image
    folders, Cityscapes or CamVid folders; default: the sample clips not used for calibration)."""
    import tempfile
    import time

    from calibration.calibrate import DEFAULT_SOURCES, calibrate_default
    from calibration.search import CalibrationError
    from stac.edge.client import LocalEdge
    from evaluation import report
    from evaluation.datasets import load_source
    from evaluation.evaluate import DEFAULT_LINKS, evaluate, work
    from evaluation.methods import Context
    from evaluation.run import EVAL_SOURCES, check_levels
    from evaluation.scoring import Scorer
    from stac.inference import check_tables, model_info

    started = time.perf_counter()
    sources = list(sources or EVAL_SOURCES)
    levels = [v.strip() for v in levels_spec.split(",") if v.strip()]
    only = [v.strip() for v in methods_spec.split(",") if v.strip()] if methods_spec else None
    with tempfile.TemporaryDirectory() as tmp:
        with cli_errors(CalibrationError):
            goals = sorted(float(t) for t in targets.split(","))
            if labels and len(sources) != 1:
                raise ValueError("--labels goes with exactly one SOURCE")
            check_levels(levels)
            if frames < 1 or step < 1:
                raise ValueError("--frames and --step must be at least 1")
            links = list(links or DEFAULT_LINKS)
            if "realtime" not in levels and links != list(DEFAULT_LINKS):
                raise ValueError("--link is for the realtime level: add it to --levels")
            for spec in links:
                Link.parse(spec)
            RuntimeConfig(link=links[0], device_ms=device_ms, edge_ms=edge_ms, max_in_flight=max_in_flight,
                          flow_width=flow_width, preset=preset)  # what the loop would refuse, before any work
            if onnx_dir is None:
                from stac.models.to_onnx import export_model  # torch only when exporting here

                click.echo(f"exporting {model_name} ...", err=True)
                onnx_dir = Path(tmp)
                export_model(model_name, onnx_dir, weights)
            if tables is not None:
                check_tables(tables, onnx_dir)
            else:
                click.echo("calibrating (stac-calibrate defaults) ...", err=True)
                tables = calibrate_default(onnx_dir).tables
                for s in set(sources) & set(DEFAULT_SOURCES):
                    click.echo(f"warning: {s} is a calibration clip; its numbers flatter STAC", err=True)
            info = model_info(onnx_dir)
            loaded = [load_source(s, frames, step, labels) for s in sources]
            for source in loaded:
                warning = tables.size_warning(*source.clips[0].frames[0].shape[:2])
                if warning:
                    click.echo(f"warning: {source.name}: {warning}", err=True)
            edge = LocalEdge(onnx_dir, tables)
        ctx = Context(edge, tables, gate=gate, flow_width=flow_width, preset=preset, device_ms=device_ms,
                      edge_ms=edge_ms, max_in_flight=max_in_flight)
        scorer = Scorer(edge.segment_session, len(info["classes"]))
        with cli_errors(), click.progressbar(length=work(levels, ctx, loaded, only, links), label="evaluating",
                                             file=sys.stderr) as bar:
            evaluation = evaluate(ctx, scorer, loaded, model=info["name"], levels=levels, step=step,
                                  targets=goals, graph_region_blocks=info.get("region_blocks"), only=only,
                                  links=links, tick=lambda: bar.update(1))
    command = "stac-bench eval " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["eval"] else "stac-bench eval"
    written = report.write(evaluation, goals, out, command)
    if json_path:
        json_path.write_text((out / "results.json").read_text())
    click.echo(report.realtime_tables(evaluation, evaluation.main_source))
    click.echo(report.headline(evaluation, evaluation.main_source))
    click.echo(f"wrote {len(written)} files to {out} (report.md) in {time.perf_counter() - started:.0f} s")
