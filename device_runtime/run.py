"""A whole run: source -> Runtime -> masks, outputs and the report."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from stac.edge.client import Edge
from stac.inference import SegmentSession
from stac.metrics import confusion_matrix, miou
from stac.rate import tracking_error
from stac.tables import TableSet

from .output import Outputs
from .runtime import FrameResult, Runtime, RuntimeConfig, RuntimeStats
from .sources import Source, first_size


def rates(stats: RuntimeStats, seconds: float) -> dict:
    """Kbps each way over ``seconds`` of video: the keyframes' and the answers' bytes (uplink_kbps, downlink_kbps),
    and everything that crossed the network, their messages included (up_kbps, down_kbps; stac.edge.wire)."""
    return {key: value * 8 / 1e3 / seconds for key, value in (
        ("uplink_kbps", stats.uplink_bytes), ("downlink_kbps", stats.downlink_bytes),
        ("up_kbps", stats.wire_up_bytes), ("down_kbps", stats.wire_down_bytes))}


def run(source: Source, edge: Edge, tables: TableSet, config: RuntimeConfig, *, out: str | Path | None = None,
        reference: SegmentSession | None = None, labels: list[Path] | None = None, num_classes: int = 256,
        pace: bool = False, overlay: bool = True,
        on_frame: Callable[[FrameResult, dict], None] = lambda result, live: None) -> dict:
    """Process every frame; returns the report. ``reference`` (the SEGMENT graph on raw frames) adds
    ``miou_vs_raw``, ``labels`` (class-id PNGs in frame order) ``miou``; neither counts in ``device_fps``.
    ``pace`` delivers a file's frames at the source fps, as a camera would (for asynchronous offload a file
    read as fast as possible would outrun every answer)."""
    size = first_size(source)
    runtime = Runtime(edge, tables, size, config)
    outputs = Outputs(out, source.fps, size, tables.levels - 1, overlay) if out else None
    confusion = np.zeros((num_classes, num_classes), np.int64) if reference else None
    label_confusion = np.zeros((num_classes, num_classes), np.int64) if labels else None
    busy = 0.0
    sent: list[int] = []  # bytes offloaded at each frame
    clock = time.perf_counter()
    try:
        for i, frame in enumerate(source.frames()):
            if pace:
                time.sleep(max(0.0, clock + i / source.fps - time.perf_counter()))
            started = time.perf_counter()
            result = runtime.process(frame)
            busy += time.perf_counter() - started
            sent.append(result.sent_bytes)
            if confusion is not None and frame is not None:
                confusion += confusion_matrix(result.mask, reference.run(frame), num_classes)
            if label_confusion is not None and result.index < len(labels):
                label = cv2.imread(str(labels[result.index]), cv2.IMREAD_UNCHANGED)
                if label is None or label.shape != result.mask.shape:
                    raise ValueError(f"label {labels[result.index]} is missing, unreadable or not {size[1]}x{size[0]}")
                label_confusion += confusion_matrix(result.mask, label, num_classes)
            if outputs:
                outputs.write(result.index, frame, result.mask, result.levels, result.keyframe)
            seconds = runtime.stats.frames / source.fps
            on_frame(result, {"fps": runtime.stats.frames / busy if busy else 0.0,
                              "kbps": runtime.stats.uplink_bytes * 8 / 1e3 / seconds})
        started = time.perf_counter()
        runtime.close()
        busy += time.perf_counter() - started
    finally:
        if outputs:
            outputs.close()
    stats = runtime.stats
    seconds = stats.frames / source.fps
    report = {**stats.summary(), "source": source.spec, "width": size[1], "height": size[0], "fps": source.fps,
              "codec": config.codec, "selection": runtime.config.selection, "psnr_threshold": runtime.config.psnr,
              "every": config.every, "gate_db": runtime.gate_db, "bound": config.bound, "sync": config.sync,
              "link": config.link, "exchanges": stats.exchanges, "flow_width": runtime.proc_size[1],
              "tables_id": tables.id.hex(),
              "offloaded_fps": stats.offloaded / seconds, "edge_fps": stats.offloaded / seconds,
              **rates(stats, seconds), "device_fps": stats.frames / busy if busy else None}
    if config.kbps == "auto":
        budgets = [r["budget_kbps"] for r in stats.rates]
        report.update(rates=stats.rates, max_delay_ms=config.max_delay,
                      budget_kbps_median=float(np.median(budgets)) if budgets else None)
    elif config.kbps is not None:
        report.update(tracking_error(sent, source.fps, config.kbps))
    if confusion is not None:
        report["miou_vs_raw"] = miou(confusion)
    if label_confusion is not None:
        report["miou"] = miou(label_confusion)
    return report
