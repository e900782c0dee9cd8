"""The human side of a calibration: a short Markdown summary and a PNG of accuracy and size vs level, written beside
tables.json."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from .calibrate import Calibration

WIDTH, HEIGHT, MARGIN = 720, 420, 70
BLUE, RED, GREY, BLACK = (200, 90, 20), (40, 40, 210), (200, 200, 200), (0, 0, 0)  # BGR


FILES = ("tables.json", "summary.md", "calibration.json", "accuracy_size.png")


def write(cal: Calibration, sources: list[str], out: Path) -> str:
    """FILES into ``out``: the table set, the summary (returned), the numbers behind it and the plot."""
    out.mkdir(parents=True, exist_ok=True)
    cal.tables.save(out / "tables.json")
    text = summary(cal, sources)
    (out / "summary.md").write_text(text)
    (out / "calibration.json").write_text(json.dumps(cal.report(), indent=1))
    cv2.imwrite(str(out / "accuracy_size.png"), plot(cal))
    return text


def summary(cal: Calibration, sources: list[str]) -> str:
    t = cal.tables
    lines = [
        f"# Calibration of {cal.info['model']}",
        "",
        f"- frames: {cal.info['frames']} at {cal.info['size'][1]}x{cal.info['size'][0]} from {', '.join(sources)}",
        f"- accuracy requirement: {cal.info['min_accuracy']} of the raw frames' "
        f"({'mIoU against the labels' if cal.info['labels'] else 'mIoU against the masks of the raw frames'})",
        f"- B = {t.bound:.6g} (M = {t.num_coeffs} coefficients), found in {len(cal.search)} evaluations",
        f"- levels: {t.levels}, B_l = B * {t.bounds[1] / t.bounds[0]:.4g}^(l - {t.middle_level}) spanning the "
        f"accuracies {cal.info['span'][0]:.4g} (finest) to {cal.info['span'][1]:.4g} (coarsest); level "
        f"{t.middle_level} (= B) codes the first keyframe",
        f"- table set id {t.id.hex()}",
        "",
        "| level | B_l | bytes/frame | accuracy |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {s.level} | {s.bound:.4g} | {s.bytes_per_frame:.0f} | {s.accuracy:.4f} |" for s in cal.levels]
    g, own = cal.grace, cal.grace_own
    lines += [f"| GRACE at B | {g.bound:.4g} | {g.bytes_per_frame:.0f} | {g.accuracy:.4f} |",
              f"| GRACE at its own bound | {own.bound:.4g} | {own.bytes_per_frame:.0f} | {own.accuracy:.4f} |", "",
              "Search (B, accuracy, pass):", ""]
    lines += [f"- {s.phase} {s.bound:.5g}: {s.accuracy:.4f} {'pass' if s.passed else 'fail'}" for s in cal.search]
    return "\n".join(lines) + "\n"


def plot(cal: Calibration) -> np.ndarray:
    """BGR image: accuracy (blue, left axis) and bytes per frame (red, right axis) for each level."""
    img = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    levels = np.array([s.level for s in cal.levels], float)
    acc = np.array([s.accuracy for s in cal.levels])
    size = np.array([s.bytes_per_frame for s in cal.levels])
    x0, x1, y0, y1 = MARGIN, WIDTH - MARGIN, HEIGHT - MARGIN, 40

    def px(values, lo, hi):
        return y0 + (values - lo) / max(hi - lo, 1e-12) * (y1 - y0)

    xs = x0 + levels / max(levels.max(), 1) * (x1 - x0)
    acc_lo, acc_hi = min(acc.min(), cal.info["min_accuracy"]) - 0.005, 1.0
    cv2.rectangle(img, (x0, y1), (x1, y0), GREY, 1)
    target = int(px(np.array(cal.info["min_accuracy"]), acc_lo, acc_hi))
    cv2.line(img, (x0, target), (x1, target), GREY, 1)
    for values, lo, hi, colour in ((acc, acc_lo, acc_hi, BLUE), (size, 0, size.max() * 1.05, RED)):
        points = np.stack([xs, px(values, lo, hi)], 1).astype(np.int32)
        cv2.polylines(img, [points], False, colour, 2, cv2.LINE_AA)
        for p in points:
            cv2.circle(img, tuple(int(v) for v in p), 3, colour, -1, cv2.LINE_AA)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, f"{cal.info['model']}: accuracy (blue) and bytes/frame (red) per level", (x0, 25), font, 0.5,
                BLACK, 1, cv2.LINE_AA)
    for value, y in ((acc_hi, y1), (acc_lo, y0)):
        cv2.putText(img, f"{value:.3f}", (5, y + 5), font, 0.4, BLUE, 1, cv2.LINE_AA)
    for value, y in ((size.max() * 1.05, y1), (0, y0)):
        cv2.putText(img, f"{value:.0f} B", (x1 + 5, y + 5), font, 0.4, RED, 1, cv2.LINE_AA)
    for level, x in zip(levels.astype(int), xs):
        cv2.putText(img, str(level), (int(x) - 5, y0 + 18), font, 0.4, BLACK, 1, cv2.LINE_AA)
    cv2.putText(img, "level (0 = finest)", (WIDTH // 2 - 60, HEIGHT - 15), font, 0.45, BLACK, 1, cv2.LINE_AA)
    return img
