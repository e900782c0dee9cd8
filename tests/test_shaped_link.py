"""The kernel-shaped link (bench.netns) and the harness that checks the link model against it (stac-bench link):
a real Triton edge and the real stac-runtime, in network namespaces joined by a rate-limited veth pair. Skipped,
with the reason, where namespaces or tc are not allowed."""
import json
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.link_bench import edge_spans
from bench.netns import ShapedLink, unavailable

REASON = unavailable()
needs_netns = pytest.mark.skipif(REASON is not None, reason=f"no shaped link here: {REASON}")


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@needs_netns
def test_the_kernel_keeps_the_rate_both_ways_and_the_link_is_removed():
    received = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True,
                                stdin=subprocess.PIPE)
    with ShapedLink(up_bps=2e6, down_bps=8e6) as link:
        assert link.namespace in _namespaces()
        received.stdin.write(link.host_address + "\n")
        received.stdin.flush()
        time.sleep(0.5)
        source = f"import socket,time;s=socket.create_connection(('{link.host_address}',47291));" \
                 "t=time.monotonic();s.sendall(b'x'*250000);s.shutdown(1);s.recv(1);print(time.monotonic()-t)"
        seconds = float(subprocess.run(link.prefix + [sys.executable, "-c", source], capture_output=True,
                                       text=True, check=True).stdout)
        up, _ = link.sent_bytes()
    received.wait(10)
    # 250 kB in 173 segments with 66 B of headers each, at 2 Mbit/s: 1.046 s (less the bucket's 3 kB)
    assert seconds == pytest.approx((250000 + 173 * 66) * 8 / 2e6, rel=0.06)
    assert up >= 250000 + 173 * 66
    assert link.namespace not in _namespaces()


SINK = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.stdin.readline().strip(), 47291)); s.listen(); c, _ = s.accept()
while c.recv(65536): pass
c.sendall(b"k")
"""


def test_edge_spans_read_tritons_trace(tmp_path):
    def stamps(id_, **names):
        return [{"id": id_, "timestamps": [{"name": k, "ns": int(v * 1e9)}]} for k, v in names.items()]

    top = [{"id": 5, "model_name": "h264_segment", "model_version": 1}] + stamps(
        5, GRPC_WAITREAD_END=10.0, GRPC_SEND_START=10.03, REQUEST_START=10.001)
    child = [{"id": 6, "model_name": "segment", "model_version": 1, "parent_id": 5}] + stamps(
        6, GRPC_WAITREAD_END=10.0, GRPC_SEND_START=10.02)
    end = [{"id": 7, "model_name": "h264_decode", "model_version": 1}] + stamps(
        7, GRPC_WAITREAD_END=10.5, GRPC_SEND_START=10.51)
    early = [{"id": 1, "model_name": "stac", "model_version": 1}] + stamps(1, GRPC_WAITREAD_END=2.0,
                                                                           GRPC_SEND_START=2.1)
    for i, items in enumerate((top + child, end, early)):
        (tmp_path / f"trace.json.{i}").write_text(json.dumps(items))
    # the route's own request only: not a step inside it, not a stream's end, not one before the run
    assert edge_spans(tmp_path / "trace.json", 5.0, 20.0) == [(10.0, pytest.approx(10.03))]


@needs_netns
def test_the_link_model_predicts_the_shaped_link(exported, tmp_path):
    # JPEG keyframes of carphone (~8 kB) at 1 Mbit/s: each takes ~40 ms to upload, more than the edge's time
    rows = tmp_path / "rows.json"
    result = CliRunner().invoke(main, ["link", "carphone", "--onnx-dir", str(exported("selfie")), "--rate", "1M",
                                       "--codec", "jpeg:q=90", "--json", str(rows),
                                       "--log", str(tmp_path / "link.log")])
    assert result.exit_code == 0, result.output + (tmp_path / "link.log").read_text()[-3000:]
    row, = json.loads(rows.read_text())
    assert row["rate_mbps"] == 1.0 and row["answers"] >= 10 and row["edge_errors"] == 0
    assert row["up_measured_p50_ms"] > 30  # the kernel really held the requests to the rate
    assert row["up_bytes_link"] >= row["up_bytes_model"]  # every byte the model counts crossed the link
    assert abs(row["p50_error"]) < 0.2 and abs(row["p95_error"]) < 0.3, row
    assert abs(row["up_predicted_p50_ms"] / row["up_measured_p50_ms"] - 1) < 0.2, row
    assert "carphone" in result.output and "1M" in result.output


def test_the_harness_says_why_it_cannot_run(monkeypatch):
    monkeypatch.setattr("bench.netns.unavailable", lambda: "network namespaces and tc need root (CAP_NET_ADMIN)")
    result = CliRunner().invoke(main, ["link", "carphone"])
    assert result.exit_code != 0 and "no shaped link on this machine: network namespaces" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(main, ["link", "--rate", "1M", "--trace", "step"])
    assert result.exit_code != 0 and "give --rate or --trace, not both" in result.output


def test_bench_ping_refuses_a_dead_edge():
    result = CliRunner().invoke(main, ["ping", "grpc://127.0.0.1:1", "--count", "2"])
    assert result.exit_code != 0 and "does not answer" in result.output and "Traceback" not in result.output


def test_a_shaped_link_needs_its_tools(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda tool: None)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert "iproute2" in unavailable()



def _tc_rate(link: ShapedLink) -> str:
    shown = subprocess.run(link.prefix + ["tc", "qdisc", "show", "dev", link.device_if], capture_output=True,
                           text=True, check=True).stdout
    return shown.split(" rate ")[1].split()[0]


@needs_netns
def test_the_uplink_follows_a_trace():
    with ShapedLink(up_bps=8e6, down_bps=8e6) as link:
        start = time.monotonic()
        link.follow([(0.4, 2e6), (0.4, 5e5)], start)
        time.sleep(0.2)
        first = _tc_rate(link)
        time.sleep(0.4)
        second = _tc_rate(link)
        link.stop_following()
    assert (first, second) == ("2Mbit", "500Kbit")
