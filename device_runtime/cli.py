"""stac-runtime: run the device on a video, an image folder or a camera."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from stac.codec import make_codec
from stac.codec.h264 import DEFAULT_CRF
from stac.commands import cli_errors, tables_option
from stac.contract import SEGMENT_GRAPH
from stac.edge.client import EdgeError, check_table_set, make_edge
from stac.flow import PRESETS
from stac.inference import SegmentSession, check_tables, model_info
from stac.tables import TableSet

from .run import run
from .runtime import ROUTE_DEFAULTS, SELECTIONS, RuntimeConfig
from .sources import Source, first_size


@click.group()
def main() -> None:
    """The STAC device runtime."""


@main.command("run")
@click.argument("source")
@click.option("--edge", "edge_spec", default="local", show_default=True,
              help="local (in-process onnxruntime) or grpc://HOST:PORT or http://HOST:PORT (Triton)")
@click.option("--onnx-dir", type=click.Path(file_okay=False, path_type=Path),
              help="exported graphs (stac-export --onnx-only) for the local edge and --reference model (default: the "
              "default model's, built once into the cache)")
@tables_option("tables.json from stac-calibrate (default: the cache's with the default graphs, else the built-in "
               "set)", builtin=False)
@click.option("--psnr", type=float, help="keyframe when PSNR drops below (default: "
              f"{ROUTE_DEFAULTS['h264'].psnr:g} dB, {ROUTE_DEFAULTS['stac'].psnr:g} with --codec stac or a JPEG)")
@click.option("--every", type=int, help="keyframe every N frames instead of the PSNR gate")
@click.option("--target", type=float, help="steer the PSNR gate (starting at --psnr) so masks carried between "
              "keyframes agree this well (mIoU) with the edge's fresh ones")
@click.option("--codec", default=RuntimeConfig.codec, show_default=True,
              help=f"h264 (keyframes as one inter-coded stream, CRF {DEFAULT_CRF} unless h264:crf=N), stac (STAC-coded "
              "keyframes, the paper's design), or a baseline: jpeg:q=90, grace")
@click.option("--selection", type=click.Choice(SELECTIONS),
              help="how keyframes are shaped: STAC at one level everywhere (uniform), the edge's per-region levels "
              "(paper), or the device's rate-aware map around the mask's boundaries (boundary); with --codec h264, "
              "boundary codes macroblocks far from the mask's boundaries coarser (default: "
              f"{ROUTE_DEFAULTS['h264'].selection}, {ROUTE_DEFAULTS['stac'].selection} with --codec stac)")
@click.option("--bound", type=float, help="STAC loss bound (default: the table set's B): the level of a uniform map, "
              "and what the edge selects per-region levels against")
@click.option("--kbps", help="steer STAC's bound (or, with --codec h264, the CRF) so the uplink meets this budget "
              "(Kbps), or auto: the budget follows the rate the device measures its way to the edge delivers")
@click.option("--max-delay", type=float, default=RuntimeConfig.max_delay, show_default=True,
              help="with --kbps auto: the capture-to-answer delay (ms) the budget keeps answers under")
@click.option("--sync", is_flag=True, help="wait for each keyframe's answer (deterministic; for evaluation)")
@click.option("--link", help="real time over a modelled network: up=4M,down=20M,rtt=60ms[,jitter=5ms][,trace=FILE] "
              "or a named link (constrained, lte, wifi, ideal); every mask is then the one shown at its frame's capture "
              "time, and the report gives the answers' delays (docs/runtime.md)")
@click.option("--device-ms", type=float, help="with --link: each keyframe's coding time (default: measured)")
@click.option("--edge-ms", type=float, help="with --link: the edge's time per keyframe (default: measured)")
@click.option("--max-frames", type=int)
@click.option("--pace", is_flag=True, help="deliver a file's frames at its frame rate, like a camera")
@click.option("--fps", type=float, help="source frame rate (default: the container's; 17 for folders)")
@click.option("--flow-width", type=int, default=RuntimeConfig.flow_width, show_default=True,
              help="flow runs at this width")
@click.option("--preset", type=click.Choice(list(PRESETS)), default=RuntimeConfig.preset,
              show_default=True)
@click.option("--reference", type=click.Choice(["model", "none"]), default="none", show_default=True,
              help="model: score masks against the model on raw frames (--onnx-dir's, else the default build's)")
@click.option("--labels", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="class-id PNGs in frame order")
@click.option("--timeout", type=float, default=RuntimeConfig.timeout, show_default=True,
              help="seconds per edge request")
@click.option("--wait-edge", type=float, default=20.0, show_default=True,
              help="seconds to wait for a remote edge at start")
@click.option("--offline-ok", is_flag=True, help="if the edge never answers at start, run on propagation only")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="write masks/*.png, overlay.mp4")
@click.option("--masks-only", is_flag=True, help="with --out, write the masks only (no overlay video)")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), help="report JSON")
def run_command(source, edge_spec, onnx_dir, tables, psnr, every, target, codec, selection, bound, kbps, max_delay,
                sync, link, device_ms, edge_ms, max_frames, pace, fps, flow_width, preset, reference, labels, timeout,
                wait_edge, offline_ok, out, masks_only, report_path) -> None:
    """Segment every frame of SOURCE (video file, image folder, camera index or sample clip name)."""
    with cli_errors():
        if onnx_dir is None and (edge_spec == "local" or reference == "model"):
            from export.defaults import default_build  # torch is needed only to build them, once

            onnx_dir = default_build(lambda message: click.echo(message + " ...", err=True))
            if tables is None and edge_spec == "local":
                tables = TableSet.load(onnx_dir / "tables.json")
        if tables is None:
            tables = TableSet.default()
        if onnx_dir is not None:
            check_tables(tables, onnx_dir)
        src = Source(source, max_frames, fps)
        warning = tables.size_warning(*first_size(src))
        config = RuntimeConfig(psnr=psnr, every=every, target=target, sync=sync, codec=codec, selection=selection,
                               bound=bound, kbps=_kbps(kbps), max_delay=max_delay, fps=src.fps,
                               flow_width=flow_width, preset=preset,
                               timeout=timeout, link=link, device_ms=device_ms, edge_ms=edge_ms)
        edge = make_edge(edge_spec, tables, onnx_dir, timeout)
        ref = None
        if reference == "model":
            ref = SegmentSession(onnx_dir / SEGMENT_GRAPH)
        classes = len(model_info(onnx_dir)["classes"]) if onnx_dir else 256
        label_files = sorted(labels.glob("*.png")) if labels else None
    if warning:
        click.echo(f"warning: {warning}", err=True)
    try:
        with cli_errors():
            edge.wait_ready(wait_edge)
            if make_codec(codec, tables).route == "stac":
                check_table_set(edge, tables)
    except EdgeError as e:
        if not offline_ok:
            raise click.ClickException(f"{e} (pass --offline-ok to run on propagation only)") from None
        click.echo(f"warning: {e}; running on propagation only until it answers", err=True)

    with click.progressbar(length=src.count() or 0, label="frames", file=sys.stderr, show_pos=True,
                           item_show_func=lambda live: live) as bar:
        def on_frame(result, live):
            bar.update(1, f"{live['fps']:.1f} fps {live['kbps']:.0f} Kbps")

        try:
            with cli_errors():
                report = run(src, edge, tables, config, out=out, reference=ref, labels=label_files,
                             num_classes=classes, pace=pace, overlay=not masks_only, on_frame=on_frame)
        finally:
            edge.close()
    keys = ["link", "frames", "keyframes", "offloaded", "offloaded_fps", "uplink_bytes", "uplink_kbps",
            "downlink_bytes", "downlink_kbps", "up_kbps", "down_kbps", "kbps_target", "rate_error", "rate_error_2s",
            "budget_kbps_median", "delay_p50_ms", "delay_p95_ms", "delay_p99_ms", "coding_ms_median",
            "edge_latency_ms_median", "device_fps",
            "edge_errors", "edge_refusals", "idrs", "idr_requests", "gate_db", "carried_agreement_mean", "miou_vs_raw",
            "miou"]
    for key in keys:
        if report.get(key) is not None and (report[key] or key not in ("edge_refusals", "idrs", "idr_requests")):
            value = report[key]
            click.echo(f"{key:>15}: {value:.4g}" if isinstance(value, float) else f"{key:>15}: {value}")
    if report_path:
        report_path.write_text(json.dumps(report, indent=1))


def _kbps(value: str | None) -> float | str | None:
    """--kbps: a number of Kbps, or auto (RuntimeConfig says what is wrong with either)."""
    if value is None or value.strip().lower() == "auto":
        return value and "auto"
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a number of Kbps nor auto", param_hint="--kbps") from None


if __name__ == "__main__":
    main()
