"""Build what the edge serves: `stac-export [--model selfie] [--backend python] [--out triton_models]` (the same as
`python export/build.py ...` from a checkout).

Exports the model's ONNX graphs (into OUT_onnx beside OUT: Triton would take a folder inside OUT for a
model), checks them in onnxruntime against torch on a real frame,
calibrates when no --tables is given (stac-calibrate's defaults), and writes the Triton model repository.
--onnx-only stops after the graphs, written straight into OUT.
"""
from __future__ import annotations

from pathlib import Path

import click

from calibration.calibrate import DEFAULT_SIZE, DEFAULT_SOURCES, calibrate_default
from calibration.report import write as write_calibration
from calibration.search import CalibrationError
from stac.commands import cli_errors, tables_option
from stac.edge.repository import (BACKENDS, DEFAULT_BATCH, DEFAULT_BATCH_WAIT_US, EDGE_MAX_BYTES, EDGE_MAX_PIXELS,
                                  EDGE_MAX_SIDE, write_repository)
from stac.models import MODELS, WeightsError
from stac.models.to_onnx import ExportError, export_model, validate
from stac.video import parse_size


@click.command()
@click.option("--model", "model_name", default="selfie", show_default=True, type=click.Choice(sorted(MODELS)))
@click.option("--weights", type=click.Path(dir_okay=False), help="checkpoint for models without shipped weights")
@click.option("--backend", type=click.Choice(BACKENDS), default="python", show_default=True,
              help="python: onnxruntime inside python models (pip tritonserver); onnxruntime: native backend "
                   "with GPU instances (NGC container)")
@tables_option("tables.json to serve (default: calibrate now, stac-calibrate's defaults)", builtin=False)
@click.option("--size", default=f"{DEFAULT_SIZE[1]}x{DEFAULT_SIZE[0]}", show_default=True,
              help="calibration size WIDTHxHEIGHT: the size the system will run at")
@click.option("--cpu", is_flag=True, help="with --backend onnxruntime: CPU instances instead of GPU")
@click.option("--onnx-only", is_flag=True, help="write the ONNX graphs only (no calibration, no repository)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("triton_models"),
              show_default=True)
@click.option("--max-pixels", type=int, default=EDGE_MAX_PIXELS, show_default=True,
              help="largest frame (W x H) the edge decodes; refused from its header before any work")
@click.option("--max-side", type=int, default=EDGE_MAX_SIDE, show_default=True,
              help="longest side of a frame the edge decodes, refused likewise")
@click.option("--max-bytes", type=int, default=EDGE_MAX_BYTES, show_default=True,
              help="largest request BITSTREAM the edge accepts")
@click.option("--instances", type=int, default=1, show_default=True,
              help="instances of every stateless model: requests of several devices served side by side")
@click.option("--batch", type=int, default=DEFAULT_BATCH, show_default=True,
              help="most same-size frames of different devices each graph (head, segment) runs at once (1: no batching)")
@click.option("--batch-wait-us", type=int, default=DEFAULT_BATCH_WAIT_US, show_default=True,
              help="with --batch > 1: how long a frame waits for others to batch with")
def main(model_name, weights, backend, tables, size, cpu, onnx_only, out, max_pixels, max_side, max_bytes,
         instances, batch, batch_wait_us) -> None:
    with cli_errors(WeightsError, ExportError, CalibrationError):
        onnx_dir = out if onnx_only else out.with_name(out.name + "_onnx")
        paths = export_model(model_name, onnx_dir, weights)
        for name, path in paths.items():
            click.echo(f"{name}: {path} ({path.stat().st_size / 1e6:.1f} MB)")
        if onnx_only:
            return
        click.echo(f"validating the graphs against torch: {validate(model_name, onnx_dir, weights)}")
        if tables is None:
            click.echo("calibrating (stac-calibrate defaults) ...")
            result = calibrate_default(onnx_dir, parse_size(size))
            tables = result.tables
            write_calibration(result, list(DEFAULT_SOURCES), out)  # tables.json, and the summary beside it
            click.echo(f"B = {tables.bound:.4g}, table set {tables.id.hex()} -> {out / 'tables.json'} "
                       f"(summary.md, calibration.json, accuracy_size.png beside it)")
        else:
            out.mkdir(parents=True, exist_ok=True)
            tables.save(out / "tables.json")  # clients code keyframes with what the edge holds
        write_repository(out, onnx_dir, tables, backend, max_pixels, gpu=not cpu, max_bytes=max_bytes,
                         instances=instances, max_side=max_side, batch=batch, batch_wait_us=batch_wait_us)
    click.echo(f"model repository ({backend} backend): {out}")


if __name__ == "__main__":
    main()
