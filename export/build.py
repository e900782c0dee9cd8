"""Build what the edge serves: `python export/build.py --model selfie --onnx-only --out DIR`.

With --onnx-only it writes DIR/stac_head.onnx and DIR/segment.onnx (and DIR/model.json describing the
model they came from). The full Triton model repository is built by the same command without
--onnx-only once the Triton side exists.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from stac.models import MODELS, WeightsError  # noqa: E402
from stac.models.to_onnx import ExportError, export_model  # noqa: E402


@click.command()
@click.option("--model", "model_name", default="selfie", show_default=True, type=click.Choice(sorted(MODELS)))
@click.option("--weights", type=click.Path(dir_okay=False), help="checkpoint for models without shipped weights")
@click.option("--onnx-only", is_flag=True, help="write the ONNX graphs only (no Triton repository)")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("triton_models"),
              show_default=True)
def main(model_name: str, weights: str | None, onnx_only: bool, out: Path) -> None:
    if not onnx_only:
        raise click.UsageError("the Triton model repository is not built yet; pass --onnx-only")
    try:
        paths = export_model(model_name, out, weights)
    except (WeightsError, ExportError) as e:
        raise click.ClickException(str(e)) from None
    for name, path in paths.items():
        click.echo(f"{name}: {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
