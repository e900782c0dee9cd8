"""stac-calibrate (also `python -m calibration`): write tables.json, a summary and a plot."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from stac.commands import cli_errors
from stac.tables import DEFAULT_LEVELS
from stac.video import parse_size

from .calibrate import (DEFAULT_MIN_ACCURACY, DEFAULT_SIZE, DEFAULT_SOURCES, DEFAULT_SPAN, calibrate, load_frames,
                        load_labels)
from .report import FILES, write
from .search import CalibrationError


@click.command()
@click.option("--model", "model_name", default="selfie", show_default=True,
              help="model to export and calibrate (ignored with --onnx-dir)")
@click.option("--weights", type=click.Path(dir_okay=False), help="checkpoint for models without shipped weights")
@click.option("--onnx-dir", type=click.Path(file_okay=False, path_type=Path),
              help="graphs already exported by `export/build.py --onnx-only`")
@click.option("--source", "sources", multiple=True, help="sample clip name, video file or image folder, "
              f"repeatable (default: {', '.join(DEFAULT_SOURCES)})")
@click.option("--frames-per-source", type=int, default=25, show_default=True)
@click.option("--step", type=int, default=5, show_default=True, help="take every STEP-th frame")
@click.option("--size", default=f"{DEFAULT_SIZE[1]}x{DEFAULT_SIZE[0]}", show_default=True,
              help="WIDTHxHEIGHT the frames are fitted to (the resolution the system will run at)")
# 0.98: on the default clips the selfie model's masks already move by ~1.3% mIoU with every step at 1
@click.option("--min-accuracy", type=float, default=DEFAULT_MIN_ACCURACY, show_default=True,
              help="fraction of the raw frames' accuracy the uniform tables at B must keep")
@click.option("--levels", type=int, default=DEFAULT_LEVELS, show_default=True)
@click.option("--span", default=",".join(map(str, DEFAULT_SPAN)), show_default=True,
              help="accuracy of the finest and of the coarsest level: the levels span that range")
@click.option("--labels", type=click.Path(file_okay=False), help="class-id PNGs, one per calibration frame")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("calibration_out"),
              show_default=True)
def main(model_name, weights, onnx_dir, sources, frames_per_source, step, size, min_accuracy, levels, span,
         labels, out) -> None:
    """Average gradients -> the largest bound B meeting --min-accuracy -> L table levels (tables.json)."""
    sources = list(sources or DEFAULT_SOURCES)
    with tempfile.TemporaryDirectory() as tmp, cli_errors(CalibrationError):
        hw = parse_size(size)
        try:
            finest, coarsest = (float(v) for v in span.split(","))
        except ValueError:
            raise CalibrationError(f"--span takes two accuracies FINEST,COARSEST, got {span!r}") from None
        frames = load_frames(sources, hw, frames_per_source, step)
        label_masks = load_labels(labels, len(frames), hw) if labels else None
        if onnx_dir is None:
            from stac.models.to_onnx import export_model  # torch only when exporting here

            click.echo(f"exporting {model_name} ...", err=True)
            onnx_dir = Path(tmp)
            export_model(model_name, onnx_dir, weights)
        result = calibrate(onnx_dir, frames, min_accuracy=min_accuracy, levels=levels, span=(finest, coarsest),
                           labels=label_masks, progress=lambda m: click.echo(m + " ...", err=True))
    click.echo(write(result, sources, out))
    click.echo(f"wrote {', '.join(str(out / name) for name in FILES)}")


if __name__ == "__main__":
    sys.exit(main())
