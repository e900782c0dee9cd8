import json

import pytest
from click.testing import CliRunner

from bench.cli import main
from stac.codec import read_stac
from stac.tables import TableSet
from stac.video import sample_video


def test_codec_bench_reports_and_saves_exact_bytes(tmp_path):
    out = tmp_path / "save"
    result = CliRunner().invoke(main, ["codec", str(sample_video("carphone")), "--max-frames", "3",
                                       "--codec", "stac", "--codec", "grace", "--codec", "h264:preset=veryfast",
                                       "--json", str(tmp_path / "r.json"), "--save", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "r.json").read_text())
    specs = [r["spec"] for r in doc["results"]]
    assert specs[0].startswith("jpeg:")  # the baseline is added when missing
    assert doc["results"][0]["ratio_to_jpeg"]["bytes_per_frame"] == 1.0
    for r in doc["results"]:
        folder = out / r["spec"].replace(":", "_").replace(",", "_").replace("=", "")
        frames = sorted(p for p in folder.iterdir() if p.name.startswith("frame_"))
        assert len(frames) == 3
        assert sum(p.stat().st_size for p in frames) == r["bytes_total"]
        assert r["kbps"] == pytest.approx(r["bytes_total"] * 8 / 1000 / (3 / doc["fps"]))
    stac_dir = out / "stac_level8"
    tables = TableSet.load(stac_dir / "tables.json")
    assert read_stac((stac_dir / "frame_00000.stac").read_bytes(), tables).height == 144
    assert "stac:level=8" in result.output


def test_codec_bench_clear_errors(tmp_path):
    result = CliRunner().invoke(main, ["codec", str(tmp_path / "missing.mp4")])
    assert result.exit_code != 0 and "no such video file" in result.output
    result = CliRunner().invoke(main, ["codec", str(sample_video("carphone")), "--codec", "png"])
    assert result.exit_code != 0 and "unknown codec 'png'" in result.output
    # what the STAC decoder would refuse is refused at encode time, in one line
    result = CliRunner().invoke(main, ["codec", "carphone", "--codec", "stac", "--size", "5000x5000",
                                       "--max-frames", "1"])
    assert result.exit_code == 1 and "exceeds the STAC decoder's limit of 16777216 pixels" in result.output
    assert "Traceback" not in result.output


def test_codec_bench_takes_sample_names():
    result = CliRunner().invoke(main, ["codec", "carphone", "--codec", "jpeg:q=80", "--max-frames", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("carphone")
