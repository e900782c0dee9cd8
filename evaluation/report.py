"""What `stac-bench eval --out DIR` writes: results.json, results.csv, one PNG per figure, report.md."""
from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from stac.link import Link

from .frontier import common_accuracy, curves, pareto, rate_at
from .realtime import BASELINE, MARGINS
from .run import COMMON_MARGIN, Evaluation
from .scoring import STABLE

POINT_COLUMNS = ["level", "link", "method", "setting", "source", "bytes", "frames", "bytes_per_frame", "kbps",
                 "downlink_kbps", "up_kbps", "down_kbps", "total_kbps", "offloaded_fps", "edge_fps", "miou", "fg_iou",
                 "realtime_miou", "delay_p50_ms", "delay_p95_ms", "delay_p99_ms"]
STYLE = {"stac": ("C3", "o"), "stac-oracle": ("C1", "^"), "stac-uniform": ("C5", "v"), "grace": ("C0", "s"),
         "jpeg": ("C2", "D"), "h264": ("C7", "x"), "stac-h264": ("C4", "P"), "stac-h264-target": ("C6", "X"),
         "h264-keyframes": ("C8", "*"), "stac-h264-boundary": ("C9", "p")}


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def level_curves(points: Sequence[dict], level: str, source: str) -> dict[str, list[tuple[float, float]]]:
    """method -> [(kbps, miou)] of one level and source."""
    return curves(p for p in points if p["level"] == level and p["source"] == source)


def plot_rate_accuracy(groups: dict[str, list[tuple[float, float]]], title: str, targets: Sequence[float],
                       path: Path) -> None:
    """Rate (log) vs mIoU: every setting faint, each method's Pareto frontier as a line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, pts in groups.items():
        colour, marker = STYLE.get(method, ("k", "."))
        ax.scatter(*zip(*pts), color=colour, marker=marker, alpha=0.25, s=14)
        front = pareto(pts)
        ax.plot(*zip(*front), color=colour, marker=marker, label=method, lw=1.5, ms=4)
    for t in targets:
        ax.axhline(t, color="0.7", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_ylim(min(targets) - 0.08, 1.0)
    ax.set_xlabel("Kbps")
    ax.set_ylabel("mIoU")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bars(groups: dict[str, list[tuple[float, float]]], target: float, title: str, path: Path) -> None:
    """Table I as bars: the Kbps each method needs at one accuracy target (unreached methods marked)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(groups)
    rates = [rate_at(groups[m], target) for m in names]
    heights = [r.rate or 0 for r in rates]
    ax.bar(names, heights, color=[STYLE.get(m, ("k", "."))[0] for m in names])
    for i, r in enumerate(rates):
        ax.text(i, heights[i], f"{r.rate:.0f}" if r.rate else r.status, ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(f"Kbps at mIoU {target:g}")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_xy(series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str, title: str, path: Path) -> None:
    """Ablation plots: one line per series."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in series.items():
        if pts:
            ax.plot(*zip(*sorted(pts)), marker="o", ms=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ablations(ablations: dict, targets: Sequence[float], out: Path) -> list[tuple[str, Path]]:
    """Fig. 6 (levels), Fig. 7 (regions), Fig. 8 (propagation), the gate threshold: (title, file) each."""
    figures = []
    for key, variant, title in (("levels", "levels_L", "Fig. 6: number of table levels L"),
                                ("regions", "region_blocks", "Fig. 7: region size (blocks)")):
        if ablations.get(key):
            figures.append((title, out / f"ablation_{key}.png"))
            plot_rate_accuracy(curves(ablations[key]), title + ", codec level, closed-loop STAC", targets,
                               figures[-1][1])
    if ablations.get("propagation"):
        pts = ablations["propagation"]
        figures.append(("Fig. 8: propagated masks vs PSNR", out / "ablation_propagation.png"))
        plot_xy({"miou": [(p["psnr_db"], p["miou"]) for p in pts]}, "PSNR of the propagated frame (dB)",
                "mIoU of the propagated mask", figures[-1][0], figures[-1][1])
    if ablations.get("threshold"):
        pts = ablations["threshold"]
        figures.append(("PSNR gate threshold: rate", out / "ablation_threshold_rate.png"))
        plot_xy({"stac": [(p["psnr_threshold"], p["kbps"]) for p in pts]}, "PSNR threshold (dB)", "Kbps",
                figures[-1][0], figures[-1][1])
        figures.append(("PSNR gate threshold: accuracy", out / "ablation_threshold_miou.png"))
        plot_xy({"stac": [(p["psnr_threshold"], p["miou"]) for p in pts]}, "PSNR threshold (dB)", "mIoU",
                figures[-1][0], figures[-1][1])
    return figures


def _rate(value: float | None, status: str) -> str:
    return f"{value:.1f}" if value is not None else status


def _interval(s: dict) -> str:
    """The bootstrap interval of a saving, when there is one."""
    if s.get("saving_low") is None:
        return ""
    return f" [{s['saving_low'] * 100:+.1f}, {s['saving_high'] * 100:+.1f}]"


def headline(evaluation: Evaluation, source: str) -> str:
    """Markdown: per level and subject (`stac`, `stac-h264`), the Kbps each method needs at each target and the
    subject's saving against it (codec level: with its 90% frame-bootstrap interval)."""
    lines = []
    for level in ("system", "codec"):
        at_level = [s for s in evaluation.savings if s["level"] == level and s["source"] == source]
        for subject in dict.fromkeys(s["subject"] for s in at_level):
            lines += _savings_table([s for s in at_level if s["subject"] == subject], level, source, subject)
    return "\n".join(lines)


def _savings_table(rows: list[dict], level: str, source: str, subject: str) -> list[str]:
    targets = sorted({s["target"] for s in rows})
    spread = " [its 90% frame-bootstrap interval, %]" if any(s.get("saving_low") is not None for s in rows) else ""
    lines = [f"**{level} level** ({source}): Kbps needed at equal mIoU; saving = 1 - {subject} / method{spread}", "",
             "| method | " + " | ".join(f"mIoU {t:g}" for t in targets) + " |", "| --- |" + " --- |" * len(targets)]
    mine = {s["target"]: (s["rate_subject"], s["status_subject"]) for s in rows}
    lines.append(f"| **{subject}** | " + " | ".join(_rate(*mine[t]) for t in targets) + " |")
    for method in dict.fromkeys(s["method"] for s in rows):
        cells = []
        for t in targets:
            s = next(r for r in rows if r["method"] == method and r["target"] == t)
            saving = "" if s["saving"] is None else f" ({s['saving']:+.1%}{_interval(s)})"
            cells.append(_rate(s["rate_other"], s["status_other"]) + saving)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines + [""]


def _kbps(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def realtime_tables(evaluation: Evaluation, source: str) -> str:
    """Markdown, per link: each method's best real-time mIoU and what it costs; then every method against H.264
    streaming every frame, MARGINS below the best that baseline reaches on the link."""
    lines = []
    rows = [r for r in evaluation.realtime if r["source"] == source]
    for link in dict.fromkeys(r["link"] for r in rows):
        best = [r for r in rows if r["link"] == link and r["kind"] == "best"]
        lines += [f"**Real time, link `{link}`** ({source}): the mask shown at each frame's capture time; each "
                  f"method's most accurate setting", "",
                  "| method | real-time mIoU | setting | up Kbps | down Kbps | delay p50 / p95 ms | edge fps |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['method']} | {r['realtime_miou']:.4f} | {r['setting']} | {r['up_kbps']:.1f} | "
                  f"{r['down_kbps']:.1f} | {_ms(r['delay_p50_ms'])} / {_ms(r['delay_p95_ms'])} | {r['edge_fps']:.1f} |"
                  for r in sorted(best, key=lambda r: -r["realtime_miou"])]
        targets = [r for r in rows if r["link"] == link and r["kind"] == "target"]
        if targets:
            goals = list(dict.fromkeys((r["margin"], r["target"]) for r in targets))
            lines += ["", f"Total Kbps (up + down) needed at {BASELINE}'s best real-time mIoU less "
                      + " and ".join(f"{m:g}" for m, _ in goals) + f"; saving against {BASELINE}; at the cheapest "
                      f"setting that gets there, edge inferences as a share of {BASELINE}'s and p95 delay", "",
                      "| method | " + " | ".join(f"mIoU {t:.3f}" for _, t in goals) + " |",
                      "| --- |" + " --- |" * len(goals)]
            for method in dict.fromkeys(r["method"] for r in targets):
                cells = []
                for margin, _ in goals:
                    r = next(x for x in targets if x["method"] == method and x["margin"] == margin)
                    if r["total_kbps"] is None:
                        cells.append(r["status"])
                        continue
                    share = "" if r["edge_share"] is None else f", edge {r['edge_share']:.0%}"
                    cells.append(f"{r['total_kbps']:.1f}" + ("" if r["saving"] is None or method == BASELINE else
                                                             f" ({r['saving']:+.1%})") + share
                                 + f", p95 {_ms(r['delay_p95_ms'])} ms")
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def stability_table(evaluation: Evaluation) -> str:
    """Markdown: the model's own masks of raw frames t and t + d, per source, flagging sources below STABLE."""
    if not evaluation.stability:
        return ""
    distances = list(dict.fromkeys(d for values in evaluation.stability.values() for d in values))
    lines = ["**Reference stability**: mIoU of the model's masks of raw frames t and t + d (confusion pooled). On a "
             f"source below {STABLE:g} at t+1 the model flickers more than the accuracies compared differ: a target "
             "above its stability measures the model, not the method, since every method that carries a mask (all "
             "do, under a real delay) is capped near it.", "",
             "| source | " + " | ".join(distances) + " | |", "| --- |" + " --- |" * (len(distances) + 1)]
    for source, values in evaluation.stability.items():
        flag = f"below {STABLE:g}: targets above it measure the model" if values.get("t+1", 1.0) < STABLE else ""
        lines.append(f"| {source} | " + " | ".join(f"{values[d]:.4f}" if d in values else "-" for d in distances)
                     + f" | {flag} |")
    return "\n".join(lines) + "\n"


def plot_realtime(points: Sequence[dict], source: str, path: Path) -> bool:
    """Real-time mIoU (each method's best) against the link's uplink rate, one panel per RTT; False if no link."""
    best: dict[tuple[float, str], dict[float, float]] = {}
    for p in points:
        if p["level"] == "realtime" and p["source"] == source:
            link = Link.parse(p["link"])
            series = best.setdefault((link.rtt, p["method"]), {})
            series[link.up.bps] = max(series.get(link.up.bps, 0.0), p["realtime_miou"])
    if not best:
        return False
    plt = _plt()
    rtts = sorted({rtt for rtt, _ in best})
    fig, axes = plt.subplots(1, len(rtts), figsize=(4.5 * len(rtts), 4), squeeze=False, sharey=True)
    for ax, rtt in zip(axes[0], rtts):
        for (r, method), series in best.items():
            if r == rtt:
                colour, marker = STYLE.get(method, ("k", "."))
                rates = sorted(series)
                ax.plot([x / 1e6 for x in rates], [series[x] for x in rates], color=colour, marker=marker,
                        label=method)
        ax.set_xscale("log")
        ax.set_xlabel("uplink Mbps")
        ax.set_title(f"RTT {rtt * 1e3:g} ms")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel(f"best real-time mIoU ({source})")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def table1(evaluation: Evaluation, target: float, source: str) -> str:
    """Markdown, paper Table I style: each method's cheapest system-level setting reaching ``target``, or the
    highest accuracy every method reaches when that is lower (methods compared at one accuracy)."""
    points = [p for p in evaluation.points if p["level"] == "system" and p["source"] == source]
    if not points:
        return ""
    target = min(target, common_accuracy(curves(points), COMMON_MARGIN))
    rows = [f"**Table I** ({source}): each method's cheapest measured system-level setting with mIoU >= {target:g}",
            "", "| method | setting | Kbps (keyframes) | answers Kbps | mIoU | fg IoU | offloaded fps |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for method in dict.fromkeys(p["method"] for p in points):
        reached = [p for p in points if p["method"] == method and p["miou"] >= target]
        if not reached:
            rows.append(f"| {method} | unreached | | | | | |")
            continue
        p = min(reached, key=lambda p: p["kbps"])
        fg = f"{p['fg_iou']:.4f}" if "fg_iou" in p else ""
        rows.append(f"| {method} | {p['setting']} | {p['kbps']:.1f} | {p['downlink_kbps']:.1f} | {p['miou']:.4f} | "
                    f"{fg} | {p['offloaded_fps']:.2f} |")
    return "\n".join(rows) + "\n"


def ablation_tables(ablations: dict, targets: Sequence[float]) -> str:
    """Markdown summaries of the ablations beside their figures."""
    lines = []
    for key, title in (("levels", "Fig. 6, table levels"), ("regions", "Fig. 7, region size")):
        if ablations.get(key):
            lines += [f"**{title}** (closed-loop STAC, codec level): Kbps at mIoU", "",
                      "| variant | " + " | ".join(f"{t:g}" for t in targets) + " |",
                      "| --- |" + " --- |" * len(targets)]
            for name, pts in curves(ablations[key]).items():
                lines.append(f"| {name} | " + " | ".join(_rate(r.rate, r.status) for r in
                                                        (rate_at(pts, t) for t in targets)) + " |")
            lines.append("")
    if ablations.get("threshold"):
        lines += ["**PSNR gate** (STAC at the calibrated bound)", "", "| threshold dB | Kbps | mIoU | offloaded fps |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {p['psnr_threshold']} | {p['kbps']:.1f} | {p['miou']:.4f} | {p['offloaded_fps']:.2f} |"
                  for p in ablations["threshold"]]
        lines.append("")
    if ablations.get("sensitivity"):
        first = ablations["sensitivity"][0]
        lines += [f"**Region sensitivity**: Spearman correlation of each candidate with the share of mask pixels "
                  f"that change when the frame goes from level {first['base_level']} to {first['coarser_level']} "
                  f"(per region grown by {first['margin_px']} px), mean over frames", "",
                  "| candidate | Spearman | frames |", "| --- | --- | --- |"]
        lines += [f"| {p['candidate']} | " + ("-" if p["spearman"] is None else f"{p['spearman']:.3f}")
                  + f" | {p['frames']} |" for p in ablations["sensitivity"]]
        lines.append("")
    carried = (("propagation_distance", "**Propagation ceiling**", "frames since the keyframe", "frames since keyframe",
                lambda p: f"{p['frames_since_keyframe']}"),
               ("propagation", "**Fig. 8**", "PSNR of the carried frame", "PSNR dB",
                lambda p: f"{p['psnr_db'] - 0.5:g}-{p['psnr_db'] + 0.5:g}"))
    for key, title, by, column, row in carried:
        if ablations.get(key):
            lines += [f"{title}: masks carried from raw keyframes, by {by}", "", f"| {column} | frames | mIoU |",
                      "| --- | --- | --- |"]
            lines += [f"| {row(p)} | {p['frames']} | {p['miou']:.4f} |" for p in ablations[key]]
            lines.append("")
    return "\n".join(lines)


def write(evaluation: Evaluation, targets: Sequence[float], out: Path, command: str) -> list[Path]:
    """Everything into ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json", out / "results.csv"]
    (out / "results.json").write_text(json.dumps(evaluation.to_json(), indent=1))
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, POINT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(evaluation.points)
    sources = list(dict.fromkeys(p["source"] for p in evaluation.points))
    main_source = evaluation.main_source
    figures = []
    for level in ("system", "codec"):
        for source in sources:
            groups = level_curves(evaluation.points, level, source)
            if groups:
                path = out / f"{level}_{source.replace('/', '_')}.png"
                plot_rate_accuracy(groups, f"{level} level, {source}", targets, path)
                figures.append((f"{level} level, {source}", path))
        groups = level_curves(evaluation.points, level, main_source)
        if groups:
            target = targets[len(targets) // 2]
            path = out / f"table1_{level}.png"
            plot_bars(groups, target, f"{level} level, {main_source}: Kbps at mIoU {target:g}", path)
            figures.append((f"Kbps at mIoU {target:g}, {level} level", path))
    figures += plot_ablations(evaluation.ablations, targets, out)
    if plot_realtime(evaluation.points, main_source, out / "realtime.png"):
        figures.append((f"Real-time mIoU against the uplink, {main_source}", out / "realtime.png"))
    timing = "\n".join(f"| {t['level']}{' over ' + t['link'] if t.get('link') else ''} | {t['source']} | "
                       f"{t['seconds']:.0f} |" for t in evaluation.timing)
    text = [f"# STAC evaluation: {evaluation.model}", "",
            f"Made by `{command}`. Sources: {', '.join(evaluation.sources)}. Accuracy: mIoU against "
            + ("labels." if evaluation.reference == "labels" else "the model's masks on the raw frames."), "",
            realtime_tables(evaluation, main_source), stability_table(evaluation),
            headline(evaluation, main_source), table1(evaluation, targets[len(targets) // 2], main_source),
            ablation_tables(evaluation.ablations, targets),
            "Rates come from each method's Pareto frontier (log Kbps, linear in mIoU between settings); "
            "`unreached`: no setting got there; `below-sweep`: even the cheapest setting was more accurate. Kbps at "
            "the codec and system levels count the keyframes (the paper's uplink); answers Kbps the coded masks that "
            "come back; at the real-time level every byte both ways, the protocol's messages included.", ""]
    if main_source == "pooled" and (evaluation.savings or evaluation.realtime):
        text += ["## Per source", ""] + [realtime_tables(evaluation, s) + headline(evaluation, s)
                                         for s in sources if s != "pooled"]
    text += [f"## {title}\n\n![{title}]({path.name})\n" for title, path in figures]
    text += ["## Time", "", "| level | source | seconds |", "| --- | --- | --- |", timing, ""]
    (out / "report.md").write_text("\n".join(text))
    return written + [p for _, p in figures] + [out / "report.md"]
