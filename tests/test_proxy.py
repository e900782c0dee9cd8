"""Several real tritonservers behind a real HAProxy (stac.edge.proxy): one device on one server, refusals under
overload, failover when a server dies, and `stac-edge serve --proxy`."""
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import tritonclient.http as httpclient

from device_runtime.runtime import Runtime, RuntimeConfig
from stac.codec import make_codec
from stac.edge.client import EdgeError, TritonEdge
from stac.edge.proxy import Deployment, Limits, haproxy_config
from stac.edge.repository import write_repository
from stac.edge.server import free_port
from stac.tables import TableSet
from stac.video import read_frames, sample_video

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def repository(exported, tmp_path_factory):
    return write_repository(tmp_path_factory.mktemp("triton_models"), exported("selfie"), TableSet.default(), "python")


@pytest.fixture(scope="module")
def pair(repository):
    with Deployment(repository, 2, ready_timeout=180) as running:
        yield running


def _served(server, model: str) -> int:
    """Requests ``server`` answered with ``model`` (Triton's statistics, asked of the server itself)."""
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        stats = client.get_inference_statistics(model)["model_stats"][0]
    finally:
        client.close()
    return int(stats["inference_stats"]["success"]["count"])


def _grown(servers, model: str, before: list[int], total: int) -> list[int]:
    """What each server answered since ``before``, once ``total`` answers are counted (Triton counts a request after
    its answer has left: a count read at once can miss the last one) or 10 s have passed."""
    deadline = time.monotonic() + 10
    while True:
        grew = [_served(s, model) - b for s, b in zip(servers, before)]
        if sum(grew) >= total or time.monotonic() > deadline:
            return grew
        time.sleep(0.05)


def _url(edge, scheme: str) -> str:
    return f"{scheme}://{edge.grpc_url if scheme == 'grpc' else edge.http_url}"


def test_limits_and_configuration():
    with pytest.raises(ValueError, match="must be >= 1"):
        Limits(max_queue=0)
    config = haproxy_config([], "127.0.0.1", 1, 2, Limits(3, 4, 50, 100))
    assert "balance hdr(stac-device)" in config and "timeout queue 50ms" in config


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_each_device_stays_on_one_server_and_devices_spread(pair, carphone_frames, scheme):
    data = make_codec("stac", TableSet.default()).encode(carphone_frames[0])
    used = set()
    for k in range(8):
        edge = TritonEdge(_url(pair, scheme), device=f"device-{k}")
        before = [_served(s, "stac") for s in pair.servers]
        for _ in range(3):
            assert edge.segment(data, "stac", carphone_frames[0].shape[:2]).mask.shape == (144, 176)
        edge.close()
        grew = _grown(pair.servers, "stac", before, 3)
        assert sorted(grew) == [0, 3], grew  # all three on one server
        used.add(grew.index(3))
    assert used == {0, 1}


def test_overload_is_refused_fast_and_the_device_keeps_masks_and_recovers(repository, bikes_frames,
                                                                         carphone_frames):
    """One server that runs one request and queues one: a flood of large keyframes fills it, the proxy refuses the
    rest (and the device's), the device carries its masks and is answered again once the flood stops."""
    tables = TableSet.default()
    large = make_codec("stac", tables).encode(bikes_frames[0])
    stop, flood_errors = threading.Event(), []

    def flood(url: str) -> None:
        edge = TritonEdge(url)
        while not stop.is_set():
            try:
                edge.segment(large, "stac", bikes_frames[0].shape[:2])
            except EdgeError as e:
                flood_errors.append(e)
        edge.close()

    with Deployment(repository, 1, limits=Limits(max_in_flight=1, max_queue=1, queue_ms=20),
                    ready_timeout=180) as one:
        # the limits hold per protocol: the flood comes over both
        threads = [threading.Thread(target=flood, args=(_url(one, scheme),)) for scheme in ("grpc", "http") * 3]
        for t in threads:
            t.start()
        try:
            device = Runtime(TritonEdge(_url(one, "http")), tables, carphone_frames[0].shape[:2],
                             RuntimeConfig(sync=True, every=1, retry_after=0.0))
            loaded = [device.process(carphone_frames[i % 4]) for i in range(24)]
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert flood_errors and all(e.refused for e in flood_errors), flood_errors[:3]
        assert device.stats.refusals > 0 and device.stats.refusals == device.stats.edge_errors
        assert all(r.mask.shape == (144, 176) for r in loaded)  # every frame has its mask
        answered = device.stats.answers
        after = [device.process(carphone_frames[i % 4]) for i in range(4)]
        assert device.stats.answers == answered + 4 and all(r.mask.shape == (144, 176) for r in after)
        device.close()


def test_a_killed_server_s_devices_move_to_the_other_and_it_comes_back(pair, bikes_frames):
    """An H.264 device's stream on one server; that server is killed: the device's next keyframes go to the other
    one, which restarts the stream from an IDR; the deployment starts the dead server again."""
    frames = bikes_frames * 2
    device = Runtime(TritonEdge(_url(pair, "grpc"), device="failover"), TableSet.default(), frames[0].shape[:2],
                     RuntimeConfig(sync=True, every=2, codec="h264:crf=28", retry_after=0.0))
    for frame in frames[:6]:
        device.process(frame)
    assert device.stats.answers == 3 and device.stats.edge_errors == 0
    served = _grown(pair.servers, "h264_segment", [0, 0], 3)
    assert sorted(served) == [0, 3], served  # the stream on one server
    holder = served.index(3)
    other = pair.servers[1 - holder]
    before = _served(other, "h264_segment")
    pair.servers[holder].process.send_signal(signal.SIGKILL)
    pair.servers[holder].process.wait(30)
    moved = [device.process(frame) for frame in frames[6:]]
    assert all(r.mask.shape == frames[0].shape[:2] for r in moved)
    assert device.stats.answers >= 5  # the stream goes on, on the other server, from an IDR
    assert _grown([other], "h264_segment", [before], 1)[0] > 0 and device.stats.idrs >= 2
    device.close()
    lines = pair.watch()
    assert any(f"server {holder} ready again" in line for line in lines), lines
    assert _served(pair.servers[holder], "h264_segment") == 0  # a new server, on the same ports
    edge = TritonEdge(f"grpc://{pair.servers[holder].grpc_url}")
    data = make_codec("stac", TableSet.default()).encode(bikes_frames[0])
    assert edge.segment(data, "stac", bikes_frames[0].shape[:2]).mask.shape == bikes_frames[0].shape[:2]
    edge.close()


def _run_and_check(args: list[str], check_url: str, repository) -> str:
    """`stac-edge ARGS` until ready, `stac-edge check` through it, then SIGTERM (exit 0): its ready line."""
    process = subprocess.Popen([sys.executable, "-m", "edge_server.cli", *args], cwd=REPO_ROOT,
                               stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        while "ready:" not in line and process.poll() is None:
            line = process.stderr.readline()
        done = subprocess.run([sys.executable, "-m", "edge_server.cli", "check", check_url, "--tables",
                               str(repository / "stac_decode" / "1" / "tables.json")],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "one keyframe" in done.stdout, done.stderr
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    return line


def _refused(args: list[str]) -> str:
    """`stac-edge ARGS`, which must fail in one line: its message."""
    done = subprocess.run([sys.executable, "-m", "edge_server.cli", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    return done.stderr


def test_stac_edge_serve_proxy(repository):
    ports = [str(free_port()), str(free_port())]
    line = _run_and_check(["serve", "--repo", str(repository), "--proxy", "--servers", "2", "--http-port", ports[0],
                           "--grpc-port", ports[1]], f"grpc://127.0.0.1:{ports[1]}", repository)
    assert "server 0" in line and "server 1" in line and "proxy log" in line, line
    assert "--servers needs --proxy" in _refused(["serve", "--repo", str(repository), "--servers", "2"])


def test_stac_edge_proxy_in_front_of_servers_running_elsewhere(pair, repository):
    ports = [str(free_port()), str(free_port())]
    upstreams = [f"--server={s.address}:{s.grpc_port}:{s.http_port}" for s in pair.servers]
    line = _run_and_check(["proxy", *upstreams, "--address", "127.0.0.1", "--http-port", ports[0], "--grpc-port",
                           ports[1]], f"http://127.0.0.1:{ports[0]}", repository)
    assert all(s.grpc_url in line for s in pair.servers), line
    assert "HOST:GRPC_PORT:HTTP_PORT" in _refused(["proxy", "--server", "10.0.0.2:8001"])


def test_bench_failover_kills_a_server_under_its_devices(repository, tmp_path):
    import json

    from click.testing import CliRunner

    from bench.cli import main as bench_main

    out, tables = tmp_path / "failover.json", str(repository / "stac_decode" / "1" / "tables.json")
    result = CliRunner().invoke(bench_main, ["failover", "--repo", str(repository), "--tables", tables, "--route",
                                             "stac-jpeg", "--clip", "carphone", "--max-frames", "30", "--devices", "2",
                                             "--seconds", "4", "--kill-after", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text())
    assert row["servers"] == 2 and row["devices"] == 2 and len(row["back_s"]) == 2
    assert row["back_s_max"] is not None and row["answered"] > 0  # every device was answered after the kill
    assert "answered again within" in result.output
    bad = CliRunner().invoke(bench_main, ["failover", "--repo", str(repository), "--tables", tables, "--servers", "1"])
    assert bad.exit_code == 1 and "--servers must be at least 2" in bad.output
