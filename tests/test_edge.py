"""The Triton edge, against a real tritonserver process (the nvidia-pytriton wheel's), over gRPC and HTTP."""
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from PIL import Image

from bench.fuzz import bomb, claim
from stac.codec import make_codec
from stac.contract import MODELS
from stac.edge.client import EdgeError, LocalEdge, TritonEdge, check_table_set
from stac.edge.repository import EDGE_MAX_BYTES, EDGE_MAX_PIXELS, EDGE_MAX_SIDE, write_repository
from stac.edge.streams import Stream
from stac.edge.server import ServerError, TritonServer
from stac.inference import batch_runs
from stac.tables import TableSet
from stac.video import resize

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def repository(exported, tmp_path_factory):
    repo = tmp_path_factory.mktemp("triton_models")
    return write_repository(repo, exported("selfie"), TableSet.default(), "python")


@pytest.fixture(scope="module")
def server(repository):
    with TritonServer(repository, ready_timeout=180) as running:  # stopped even when a test fails
        yield running


@pytest.fixture(scope="module")
def local(exported):
    return LocalEdge(exported("selfie"), TableSet.default())


def _url(server, scheme):
    return f"{scheme}://{server.grpc_url if scheme == 'grpc' else server.http_url}"


def _keyframes(frames, tables):
    codec = make_codec("stac", tables)
    rng = np.random.default_rng(3)
    out = []
    for frame in frames:
        levels = rng.integers(0, tables.levels, codec.uniform_levels(*frame.shape[:2]).shape, dtype=np.uint8)
        out.append((codec.encode_levels(frame, levels), frame.shape[:2]))
    return out


def test_server_is_ready_and_lists_the_models(server):
    client = httpclient.InferenceServerClient(server.http_url)
    assert client.is_server_ready()
    names = {m["name"] for m in client.get_model_repository_index(headers=server.admin_headers())}
    assert names == set(MODELS)
    assert all(client.is_model_ready(n) for n in names)


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_admin_apis_are_restricted(server, scheme):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = (grpcclient if scheme == "grpc" else httpclient).InferenceServerClient(
        server.grpc_url if scheme == "grpc" else server.http_url)
    for call in (client.get_model_repository_index, lambda **kw: client.unload_model("segment", **kw),
                 lambda **kw: client.get_log_settings(**kw), lambda **kw: client.get_trace_settings(**kw),
                 lambda **kw: client.get_system_shared_memory_status(**kw)):
        with pytest.raises(InferenceServerException, match="restricted|not allowed|admin"):
            call()
    assert client.is_model_ready("segment") and client.get_model_config("stac_decode")  # what devices need
    assert client.get_log_settings(headers=server.admin_headers(scheme))  # with the key
    client.close()


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_stac_ensemble_equals_the_local_edge(server, local, scheme, carphone_frames, bikes_frames):
    edge = TritonEdge(_url(server, scheme))
    edge.wait_ready(10)
    for data, size in _keyframes([carphone_frames[0], bikes_frames[2]], TableSet.default()):
        for levels in (True, False):
            remote, here = edge.segment(data, "stac", size, levels=levels), local.segment(data, "stac", size,
                                                                                          levels=levels)
            np.testing.assert_array_equal(remote.mask, here.mask)
            assert (remote.payload, remote.wire) == (here.payload, here.wire)  # the same coded answer
            if levels:
                np.testing.assert_array_equal(remote.next_levels, here.next_levels)
            else:
                assert remote.next_levels is None and remote.payload < np.prod(size) / 50  # the mask, coded
        remote, here = (e.segment(data, "stac", size, levels=False, answer=(size[0] // 2, size[1] // 3))
                        for e in (edge, local))  # the mask at the size the device uses it at
        np.testing.assert_array_equal(remote.mask, here.mask)
        assert remote.mask.shape == (size[0] // 2, size[1] // 3) and (remote.payload, remote.wire) == (
            here.payload, here.wire)
    jpeg = make_codec("jpeg:q=90", TableSet.default()).encode(carphone_frames[1])
    for answer in (None, (72, 88)):
        remote, here = (e.segment(jpeg, "jpeg", (144, 176), answer=answer) for e in (edge, local))
        np.testing.assert_array_equal(remote.mask, here.mask)
        assert (remote.payload, remote.wire) == (here.payload, here.wire)
    with pytest.raises(EdgeError, match="ANSWER_SIZE"):  # enlarging is refused
        edge.segment(jpeg, "jpeg", (144, 176), answer=(288, 88))
    edge.close()


def test_wire_sizes_are_the_real_grpc_messages(server, carphone_frames, bikes_frames):
    """stac.edge.wire sizes what tritonclient sends and what Triton answers, byte for byte."""
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc import _utils

    from stac.contract import CODED_MASK
    from stac.edge.client import exchange
    from stac.edge.wire import GRPC_PREFIX, request_bytes, response_bytes

    client = grpcclient.InferenceServerClient(server.grpc_url)
    tables = TableSet.default()
    units = _stream(bikes_frames[:2])
    stac = make_codec("stac", tables).encode(carphone_frames[0])
    sid = 987654321
    for request in (exchange(stac, "stac"), exchange(stac, "stac", 2.5, levels=False),
                    exchange(stac, "stac", levels=False, size=(144, 176), answer=(72, 88)),
                    exchange(units[0], "h264", stream=Stream(sid, 0, True)),
                    exchange(units[1], "h264", stream=Stream(sid, 1, False), size=(272, 640), answer=(128, 301))):
        inputs = []
        for tensor, value in request.inputs:
            wire = grpcclient.InferInput(tensor.name, list(value.shape), "BYTES" if tensor.dtype == "STRING"
                                         else tensor.dtype)
            inputs.append(wire.set_data_from_numpy(value))
        outputs = [grpcclient.InferRequestedOutput(t.name) for t in request.outputs]
        stream = request.stream or Stream(0, 0, False)
        sent = _utils._get_inference_request(request.model, inputs, "", "", outputs, stream.id, stream.start, False, 0,
                                             None, None)
        assert request_bytes(request) == sent.ByteSize() + GRPC_PREFIX
        result = client.infer(request.model, inputs, outputs=outputs, sequence_id=stream.id,
                              sequence_start=stream.start)
        answer = [(t, result.as_numpy(t.name)) for t in request.outputs]
        assert answer[0][0] is CODED_MASK
        assert response_bytes(request, answer) == result.get_response().ByteSize() + GRPC_PREFIX
    client.close()


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_a_requested_bound_steers_the_ensembles_levels(server, local, scheme, carphone_frames):
    edge = TritonEdge(_url(server, scheme))
    tables = TableSet.default()
    (data, size), = _keyframes([carphone_frames[0]], tables)
    for bound in (tables.bounds[0] * 1e-3, float(tables.bounds[5]), tables.bounds[-1] * 1e3):
        remote, here = edge.segment(data, "stac", size, bound), local.segment(data, "stac", size, bound)
        np.testing.assert_array_equal(remote.mask, here.mask)
        np.testing.assert_array_equal(remote.next_levels, here.next_levels)
    assert (edge.segment(data, "stac", size, tables.bounds[-1] * 1e6).next_levels == tables.levels - 1).all()
    finest = edge.segment(data, "stac", size, tables.bounds[0] * 1e-6).next_levels
    assert finest.mean() < edge.segment(data, "stac", size).next_levels.mean()  # ties aside, the finest level
    for bad in (-1.0, 0.0, float("nan"), float("inf")):
        with pytest.raises(EdgeError, match="BOUND must be a positive finite number"):
            edge.segment(data, "stac", size, bad)
    np.testing.assert_array_equal(edge.segment(data, "stac", size).next_levels,  # the set's B when not asked
                                  local.segment(data, "stac", size).next_levels)
    edge.close()


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_bad_bitstreams_get_error_responses_and_the_server_keeps_serving(server, local, scheme, carphone_frames):
    edge = TritonEdge(_url(server, scheme))
    (data, size), = _keyframes([carphone_frames[0]], TableSet.default())
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2:len(corrupt) // 2 + 64] = bytes(64)
    cases = {"truncated": data[: len(data) // 3], "corrupt": bytes(corrupt),
             "oversized": bomb(data, "stac", 60000),  # the APP11 header's H and W (docs/bitstream.md)
             "not a jpeg": b"hello", "other tables": make_codec("stac", _other_tables()).encode(carphone_frames[0])}
    for name, bad in cases.items():
        with pytest.raises(EdgeError) as error:
            edge.segment(bad, "stac", size)
        assert "stac" in str(error.value), name
        good = edge.segment(data, "stac", size)  # the next good request succeeds
        np.testing.assert_array_equal(good.mask, local.segment(data, "stac", size).mask)
    with pytest.raises(EdgeError):
        edge.segment(b"\xff\xd8 not really", "jpeg", size)
    edge.close()


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_bad_input_is_invalid_argument_without_a_traceback(server, scheme, carphone_frames):
    edge = TritonEdge(_url(server, scheme))
    data = make_codec("jpeg:q=80").encode(carphone_frames[0])
    png = io.BytesIO()
    Image.fromarray(carphone_frames[0]).save(png, format="PNG")
    huge = data + bytes(EDGE_MAX_BYTES)  # a valid JPEG with trailing bytes past the request limit
    for bad, message in ((b"", "not a JPEG"), (png.getvalue(), "not a JPEG"),
                         (bomb(data, "jpeg", 30000), "larger than this edge"),
                         (claim(data, "jpeg", 144, 16560), f"16560x144 is larger than this edge accepts "
                                                           f"({EDGE_MAX_PIXELS} pixels, {EDGE_MAX_SIDE} on a side)"),
                         (huge, f"exceeds this edge's limit of {EDGE_MAX_BYTES} bytes")):
        with pytest.raises(EdgeError) as error:
            edge.segment(bad, "jpeg", (144, 176))
        assert message in str(error.value) and "Traceback" not in str(error.value)
        status = str(error.value.__cause__.status())
        assert status == ("StatusCode.INVALID_ARGUMENT" if scheme == "grpc" else "400"), status
        assert edge.segment(data, "jpeg", (144, 176)).mask.shape == (144, 176)  # and the server keeps serving
    edge.close()


def _stream(frames, crf=30):
    """The access units of ``frames`` as one keyframe stream."""
    codec = make_codec(f"h264:crf={crf},preset=veryfast", TableSet.default())
    return [codec.encode(f) for f in frames]


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_two_device_streams_interleaved_equal_the_local_edge(server, local, scheme, carphone_frames, bikes_frames):
    """Two devices' keyframe streams at once, their requests interleaved: each decoded against its own
    references (a shared decoder would mix them), as the local edge decodes them."""
    edges = [TritonEdge(_url(server, scheme)) for _ in range(2)]
    streams = [_stream(carphone_frames[:4]), _stream(bikes_frames[:4])]
    sizes = [carphone_frames[0].shape[:2], bikes_frames[0].shape[:2]]
    ids = [1000 + hash(scheme) % 1000, 3000 + hash(scheme) % 1000]
    for position in range(4):
        for device in (0, 1):
            stream = Stream(ids[device], position, position == 0)
            data = streams[device][position]
            remote = edges[device].segment(data, "h264", sizes[device], stream=stream)
            here = local.segment(data, "h264", sizes[device], stream=stream)
            assert remote.mask.shape == sizes[device] and remote.next_levels is None
            np.testing.assert_array_equal(remote.mask, here.mask)
    for edge in edges:
        edge.close()


def _started(server, scheme, frames, sid):
    """A Triton edge, the access units of three frames as one stream, and that stream started with its IDR."""
    edge = TritonEdge(_url(server, scheme))
    units = _stream(frames[:3])
    size = frames[0].shape[:2]
    edge.segment(units[0], "h264", size, stream=Stream(sid, 0, True))
    return edge, units, size


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_a_lost_keyframe_is_answered_need_idr_and_an_idr_restarts_the_stream(server, scheme, bikes_frames):
    sid = 5000 + hash(scheme) % 1000
    edge, units, size = _started(server, scheme, bikes_frames, sid)
    # unit 1 is lost on the way: unit 2 cannot be decoded against unit 0
    with pytest.raises(EdgeError) as lost:
        edge.segment(units[2], "h264", size, stream=Stream(sid, 2, False))
    assert lost.value.need_idr and "next decodable is 1" in str(lost.value)
    # a P-frame of a stream the edge never started (the edge restarted, or the stream went idle)
    with pytest.raises(EdgeError, match="START"):
        edge.segment(units[1], "h264", size, stream=Stream(sid + 1, 1, False))
    # the device answers with an IDR, which restarts the stream; its P-frames follow
    codec = make_codec("h264:crf=30,preset=veryfast", TableSet.default())
    codec.encode(bikes_frames[2])  # the device's encoder went on after the lost unit
    codec.request_idr()
    for position in (3, 4, 5):
        answer = edge.segment(codec.encode(bikes_frames[position]), "h264", size,
                              stream=Stream(sid, codec.position - 1, position == 3))
        assert answer.mask.shape == size
    with pytest.raises(EdgeError) as corrupt:  # garbage in a held stream: an error, and the server keeps serving
        edge.segment(b"\x00\x00\x01\x41" + bytes(50), "h264", size, stream=Stream(sid, 4, False))
    assert not corrupt.value.need_idr
    with pytest.raises(EdgeError) as after:  # the stream's references are gone after a failed decode
        edge.segment(codec.encode(bikes_frames[6]), "h264", size, stream=Stream(sid, 4, False))
    assert after.value.need_idr
    edge.close()


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_end_releases_the_stream(server, scheme, bikes_frames):
    sid = 7000 + hash(scheme) % 1000
    edge, units, size = _started(server, scheme, bikes_frames, sid)
    edge.segment(units[1], "h264", size, stream=Stream(sid, 1, False))
    edge.end(Stream(sid, 2, False))
    with pytest.raises(EdgeError, match="START"):  # Triton no longer holds the sequence
        edge.segment(units[2], "h264", size, stream=Stream(sid, 2, False))
    assert edge.segment(units[0], "h264", size, stream=Stream(sid, 0, True)).mask.shape == size  # a new stream
    edge.close()


def _other_tables():
    base = TableSet.default()
    return TableSet.from_gradients(base.gradients, base.bound * 3, base.num_coeffs, base.model)


@pytest.mark.parametrize("codec", ["stac", "h264:crf=28"])
def test_two_runtimes_at_once(server, exported, tmp_path, codec):
    """Two devices at once; with the inter codec each holds its own stream at the edge."""
    command = [sys.executable, "-m", "device_runtime.cli", "run", "carphone", "--edge", f"grpc://{server.grpc_url}",
               "--sync", "--max-frames", "40", "--codec", codec]
    runs = [subprocess.Popen(command + ["--report", str(tmp_path / f"r{i}.json")], cwd=REPO_ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    for process in runs:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()[-2000:]
    reports = [json.loads((tmp_path / f"r{i}.json").read_text()) for i in range(2)]
    for report in reports:
        assert report["frames"] == 40 and report["edge_errors"] == 0 and report["answers"] == report["offloaded"]
        assert report["idr_requests"] == 0 and report["idrs"] == (1 if codec.startswith("h264") else 0)
    assert reports[0]["uplink_bytes"] == reports[1]["uplink_bytes"]  # --sync: same input, same bytes


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_the_table_set_handshake(server, scheme, tmp_path):
    edge = TritonEdge(_url(server, scheme))
    assert edge.table_sets() == [TableSet.default().id.hex()]
    check_table_set(edge, TableSet.default())
    with pytest.raises(ValueError, match="the edge holds table set .* every STAC keyframe would be refused"):
        check_table_set(edge, _other_tables())
    edge.close()
    _other_tables().save(tmp_path / "other.json")
    for tool in ("device_runtime.cli", "edge_server.cli"):
        args = ["run", "carphone", "--edge", _url(server, scheme), "--max-frames", "5", "--codec", "stac"] \
            if tool == "device_runtime.cli" else ["check", _url(server, scheme)]  # STAC keyframes need the tables
        refused = subprocess.run([sys.executable, "-m", tool, *args, "--tables", str(tmp_path / "other.json")],
                                 cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1 and "the edge holds table set" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr


def test_server_stops_and_removes_its_shared_memory_when_a_test_fails(repository):
    server = TritonServer(repository, ready_timeout=180)
    with pytest.raises(RuntimeError, match="a failing test"):
        with server:
            assert server.shared_memory_files()
            raise RuntimeError("a failing test")
    assert server.process.poll() is not None
    assert server.shared_memory_files() == []


def test_a_broken_repository_reports_the_log(tmp_path):
    (tmp_path / "stac").mkdir()
    (tmp_path / "stac" / "config.pbtxt").write_text('name: "stac"\nplatform: "ensemble" {{ nonsense')
    with pytest.raises(ServerError, match="exited") as error:
        TritonServer(tmp_path, ready_timeout=60).start()
    assert "config.pbtxt" in str(error.value) or "stac" in str(error.value)


def test_onnxruntime_repository_passes_tritons_config_parsing(exported, tmp_path):
    """The repository Dockerfile.edge copies: the local server has no onnxruntime backend, so its two ONNX
    models fail at backend lookup, but every config parses and the python models load."""
    repo = write_repository(tmp_path / "gpu", exported("selfie"), TableSet.default(), "onnxruntime")
    with TritonServer(repo, exit_on_error=False, ready_timeout=180) as running:
        index = {m["name"]: m for m in httpclient.InferenceServerClient(running.http_url).get_model_repository_index(
            headers=running.admin_headers())}
        log = running.log_tail(400)
    assert index["stac_decode"]["state"] == "READY" and index["jpeg_decode"]["state"] == "READY"
    for name in ("stac_head", "segment"):
        assert index[name]["state"] == "UNAVAILABLE"
        assert "onnxruntime" in index[name]["reason"], index[name]
    failures = [line for line in log.splitlines() if line.startswith("E") and "failed to load '" in line]
    assert failures and all("backend 'onnxruntime'" in line for line in failures), failures
    assert "parsing text-format" not in log.lower()  # a config.pbtxt syntax error would say so


def test_dockerfile_lints_clean():
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "hadolint"),
                           str(REPO_ROOT / "Dockerfile.edge")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    text = (REPO_ROOT / "Dockerfile.edge").read_text()
    assert "FROM nvcr.io/nvidia/tritonserver:24.10-py3" in text and "HEALTHCHECK" in text
    assert "EXPOSE 8000 8001 8002" in text


def test_bench_edge_against_the_server(server, exported, tmp_path):
    from click.testing import CliRunner

    from bench.cli import main as bench_main

    TableSet.default().save(tmp_path / "tables.json")
    result = CliRunner().invoke(bench_main, ["edge", f"grpc://{server.grpc_url}", "--onnx-dir", str(exported("selfie")),
                                             "--tables", str(tmp_path / "tables.json"), "--size", "176x144",
                                             "--requests", "2", "--devices", "1", "--devices", "2"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()[2:6]]
    assert [r[0] for r in rows] == ["1", "1", "2", "2"] and rows[1][1] == "in-process"
    assert float(rows[0][-1].rstrip("x")) > 0
    served = result.output.splitlines()[6]  # where the server's time went, the answer's coding included
    assert served.startswith("server ms per request") and "mask_encode" in served and "stac_head" in served


def test_stac_edge_serve_stops_on_sigterm(repository):
    import signal

    from stac.edge.server import free_port

    ports = [str(free_port()) for _ in range(3)]
    process = _serve(repository, ports)
    try:
        assert "ready:" in _wait_ready(process)
        done = subprocess.run([sys.executable, "-m", "edge_server.cli", "check", f"http://127.0.0.1:{ports[0]}",
                               "--tables", str(repository / "stac_decode" / "1" / "tables.json")],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "one keyframe" in done.stdout, done.stderr
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        assert "stopped" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()


def _serve(repository, ports):
    return subprocess.Popen([sys.executable, "-m", "edge_server.cli", "serve", "--repo", str(repository),
                             "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2]],
                            cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)


def _wait_ready(process, seconds=180):
    import time

    deadline, line = time.monotonic() + seconds, ""
    while "ready:" not in line and time.monotonic() < deadline and process.poll() is None:
        line = process.stderr.readline()
    return line


def test_a_killed_serve_leaves_no_server_behind(repository):
    import signal
    import time

    from stac.edge.server import free_port

    ports = [str(free_port()) for _ in range(3)]
    first = _serve(repository, ports)
    try:
        line = _wait_ready(first)
        assert "ready:" in line
        workdir = Path(line.rsplit(" log ", 1)[1].rstrip(")\n")).parent
        left = f"stac{first.pid}x*"  # the killed serve's shared memory (TritonServer.prefix)
        assert list(Path("/dev/shm").glob(left))
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _holding(ports[0]):
            time.sleep(0.5)
        assert not _holding(ports[0])  # tritonserver died with its parent, and its stubs with it
        second = _serve(repository, ports)  # the same ports: ready means this server
        try:
            line = _wait_ready(second)
            assert "ready:" in line
            assert not list(Path("/dev/shm").glob(left))  # the second start removed it
            second.send_signal(signal.SIGTERM)
            assert second.wait(60) == 0
            assert not Path(line.rsplit(" log ", 1)[1].rstrip(")\n")).parent.exists()  # the work folder went too
        finally:
            if second.poll() is None:
                second.kill()
        shutil.rmtree(workdir, ignore_errors=True)  # a SIGKILLed serve cannot clean up after itself
    finally:
        if first.poll() is None:
            first.kill()


def _holding(port: str) -> bool:
    """Whether a process other than ours serves HTTP on ``port``."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/live", timeout=1):
            return True
    except OSError:
        return False


def test_serve_refuses_what_it_cannot_serve(repository, tmp_path):
    import socket

    from stac.edge.server import free_port

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = [str(free_port()), str(free_port())]
    (tmp_path / "empty").mkdir()
    for args, message in (
            (["--repo", str(tmp_path / "none")], "does not exist"),
            (["--repo", str(tmp_path / "empty")], "holds no models"),
            (["--repo", str(repository), "--http-port", "70000"], "port 70000 is out of range"),
            (["--repo", str(repository), "--http-port", str(taken.getsockname()[1]), "--grpc-port", ports[0],
              "--metrics-port", ports[1]], f"port {taken.getsockname()[1]} on 127.0.0.1 is in use")):
        done = subprocess.run([sys.executable, "-m", "edge_server.cli", "serve", *args], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    taken.close()


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_bench_fuzz_short_run(server, scheme, tmp_path):
    from click.testing import CliRunner

    from bench.cli import main as bench_main

    TableSet.default().save(tmp_path / "tables.json")
    result = CliRunner().invoke(bench_main, ["fuzz", _url(server, scheme), "--tables", str(tmp_path / "tables.json"),
                                             "--requests", "100", "--pid", str(server.process.pid)])
    assert result.exit_code == 0, result.output
    summary = next(line for line in result.output.splitlines() if " requests in " in line)
    assert summary.startswith("100 requests") and " 0 hangs, 0 crashes" in summary
    errors = int(summary.split(": ")[1].split(" errors")[0])
    assert errors >= 50  # truncations, header edits, bombs and random bytes are refused
    rss = next(line for line in result.output.splitlines() if line.startswith("server RSS"))
    assert "after 0, 25, 50, 75, 100 requests" in rss and "second half" in rss
    assert {"stac", "jpeg"} <= {line.split()[0] for line in result.output.splitlines()[1:11]}


def test_bench_soak_short_run(server, tmp_path):
    """The soak's mix against the real server: every valid keyframe (STAC, JPEG, H.264 streams) answered, mutants
    sent, the server's RSS read at every tenth of the run."""
    from click.testing import CliRunner

    from bench.cli import main as bench_main

    TableSet.default().save(tmp_path / "tables.json")
    result = CliRunner().invoke(bench_main, ["soak", f"grpc://{server.grpc_url}", "--tables",
                                             str(tmp_path / "tables.json"), "--requests", "80",
                                             "--pid", str(server.process.pid), "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["requests"] == 80 and report["done"] == [8 * q for q in range(11)]
    assert len(report["rss_mb"]) == 11 and min(report["rss_mb"]) > 0
    outcomes = report["outcomes"]
    assert sum(outcomes.values()) == 80
    valid = {what: n for what, n in outcomes.items() if not what.startswith("mutant")}
    assert {w.split()[0] for w in valid} == {"stac", "jpeg", "h264"}
    assert all(w.endswith(": success") for w in valid) and sum(valid.values()) == 20
    assert sum(n for w, n in outcomes.items() if w.startswith("mutant")) == 60


def test_the_server_killed_and_restarted_mid_run(repository, carphone_frames):
    """Every frame gets a mask while the edge is down, and offload resumes once it is back on the same ports."""
    import threading
    import time

    from device_runtime.runtime import Runtime, RuntimeConfig
    from stac.edge.server import free_port

    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    first = TritonServer(repository, ready_timeout=180, **ports).start()
    second = TritonServer(repository, ready_timeout=180, **ports)
    try:
        runtime = Runtime(TritonEdge(f"grpc://{first.grpc_url}", timeout=2.0), TableSet.default(), (144, 176),
                          RuntimeConfig(every=2, timeout=2.0, retry_after=0.5))
        masks, answered_before, restart = [], None, None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            result = runtime.process(carphone_frames[len(masks) % len(carphone_frames)])
            masks.append(result.mask)
            if len(masks) == 20:
                first.stop()  # SIGTERM, then SIGKILL: the edge is gone mid-run
                answered_before = runtime.stats.answers
                restart = threading.Thread(target=second.start)
                restart.start()
            if restart is not None and not restart.is_alive() and runtime.stats.answers > answered_before + 2:
                break
            time.sleep(0.05)
        runtime.close()
        assert all(m.shape == (144, 176) and m.dtype == np.uint8 for m in masks)
        assert runtime.stats.frames == len(masks) and runtime.stats.edge_errors >= 1
        assert runtime.stats.answers > answered_before + 2, runtime.stats.summary()  # offload resumed
    finally:
        first.stop()
        second.stop()


def test_bench_load_reports_percentiles_per_size(server, tmp_path):
    from click.testing import CliRunner

    from bench.cli import main as bench_main

    TableSet.default().save(tmp_path / "tables.json")
    result = CliRunner().invoke(bench_main, ["load", f"grpc://{server.grpc_url}", "--tables",
                                             str(tmp_path / "tables.json"), "--devices", "1,3", "--requests", "2",
                                             "--sizes", "176x144,352x288", "--pid", str(server.process.pid)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "176x144 p50/p95/p99 ms" in lines[1] and "352x288 p50/p95/p99 ms" in lines[1]
    assert lines[1].split()[-2:] == ["server", "MB"]
    rows = [line.split() for line in lines[2:]]
    assert [r[:3] for r in rows] == [["1", "2", "0"], ["3", "6", "0"]]
    assert all(float(r[3]) > 0 and len(r[4].split("/")) == 3 for r in rows)
    assert all(100 < float(r[-1]) < 100_000 for r in rows)  # the server's memory, its stubs' included


def test_instances_of_the_stateless_models(exported, tmp_path):
    repo = write_repository(tmp_path / "repo", exported("selfie"), TableSet.default(), instances=2)
    for name in ("stac_decode", "stac_head", "segment", "jpeg_decode"):
        assert "count: 2" in (repo / name / "config.pbtxt").read_text()
    assert "count: 1" in (repo / "h264_decode" / "config.pbtxt").read_text()  # its streams' decoders live in it
    # the cores are shared out between the instances of a graph; one instance keeps onnxruntime's default
    from stac.inference import instance_threads

    assert instance_threads({"instance_group": [{"kind": "KIND_CPU", "count": 4}]}, 16) == 4
    assert instance_threads({"instance_group": [{"count": 3}]}, 2) == 1
    assert instance_threads({"instance_group": [{"count": 1}]}, 16) is None and instance_threads({}, 16) is None


def test_the_graphs_batch_keyframes_of_several_devices(exported, local, tmp_path, carphone_frames):
    """Keyframes of one size sent at once by several devices run through the head (STAC) and the segment graph
    (JPEG) together: Triton's statistics count fewer executions than requests. One of another size in the same burst
    runs apart, and every answer (mask, and a STAC keyframe's next levels) equals the local edge's. The edge's pixel
    bound (two of these frames) splits the batch of four into two graph runs."""
    from concurrent.futures import ThreadPoolExecutor

    from bench.edge_bench import runs

    h, w = carphone_frames[0].shape[:2]
    repo = write_repository(tmp_path / "repo", exported("selfie"), TableSet.default(), batch=4,
                            batch_wait_us=200_000, max_pixels=2 * h * w)
    for graph in ("stac_head", "segment"):
        config = (repo / graph / "config.pbtxt").read_text()
        assert "max_batch_size: 4" in config and "max_queue_delay_microseconds: 200000" in config
        assert f'string_value: "{6 * h * w}"' in config  # max_run_values: 3 values a pixel
    frames = carphone_frames + [resize(carphone_frames[0], (h // 2, w // 2))]
    with TritonServer(repo, ready_timeout=180) as server:
        edges = [TritonEdge(f"grpc://{server.grpc_url}", device=f"device-{k}") for k in range(len(frames))]
        for kind, graph in (("stac", "stac_head"), ("jpeg", "segment")):
            codec = make_codec("stac" if kind == "stac" else "jpeg:q=90", TableSet.default())
            keyframes = [(codec.encode(f), f.shape[:2]) for f in frames]
            with ThreadPoolExecutor(len(keyframes)) as pool:
                answers = list(pool.map(lambda edge, keyframe: edge.segment(keyframe[0], kind, keyframe[1]), edges,
                                        keyframes))
            for (data, size), remote in zip(keyframes, answers):
                alone = local.segment(data, kind, size)
                np.testing.assert_array_equal(remote.mask, alone.mask)
                if kind == "stac":
                    np.testing.assert_array_equal(remote.next_levels, alone.next_levels)
                assert remote.wire == alone.wire  # the answer weighs what the in-process edge counts
            requests, executions = runs(f"grpc://{server.grpc_url}", graph)
            assert requests == len(keyframes) and 2 <= executions < len(keyframes), (graph, executions)
        for edge in edges:
            edge.close()
    with pytest.raises(ValueError, match="batch"):
        write_repository(tmp_path / "bad", exported("selfie"), TableSet.default(), batch=65)


def test_batch_runs_group_same_shapes_within_the_pixel_bound():
    image = [(1, 144, 176, 3)]  # 76032 values
    shapes = [image, [(1, 72, 88, 3)], image, image, [(1, 144, 176, 3), (1, 2)], image, image]
    assert batch_runs(shapes, None) == [[0, 2, 3, 5, 6], [1], [4]]  # every input's shape must agree
    assert batch_runs(shapes, 2 * 76032) == [[0, 2], [3, 5], [6], [1], [4]]
    assert batch_runs(shapes, 1000) == [[0], [2], [3], [5], [6], [1], [4]]  # a frame over the bound runs alone


def test_bench_load_capacity_replays_a_recorded_route(server, tmp_path):
    from click.testing import CliRunner

    from bench.cli import main as bench_main

    TableSet.default().save(tmp_path / "tables.json")
    result = CliRunner().invoke(bench_main, ["load", f"grpc://{server.grpc_url}", "--tables",
                                             str(tmp_path / "tables.json"), "--capacity", "--route", "stac-jpeg",
                                             "--clip", "carphone", "--max-frames", "30", "--seconds", "2",
                                             "--deadline", "10000", "--most", "2", "--json", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "c.json").read_text())
    found = next(r for r in rows if r["trial"] == "capacity")
    assert found["route"] == "stac-jpeg" and found["devices"] == 2 and found["requests_per_s"] > 0
    assert [r["devices"] for r in rows if r["trial"] == "2x overload"] == [4]
    trials = [r for r in rows if r["trial"] == "search"]
    assert trials[0]["devices"] == 1 and trials[0]["answered"] >= 1 and trials[0]["p95_ms"] > 0
    assert {"route", "devices", "p95_ms", "deadline_ms"} <= set(trials[0])
    assert trials[0]["batch"] >= 1.0  # STAC keyframes' requests per run of the head
    # --sweep: one trial at each count, and the segment graph's requests per run counted
    result = CliRunner().invoke(bench_main, ["load", f"grpc://{server.grpc_url}", "--tables",
                                             str(tmp_path / "tables.json"), "--capacity", "--sweep", "--devices", "1,2",
                                             "--route", "h264-every-frame", "--clip", "carphone", "--max-frames", "10",
                                             "--seconds", "1", "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "s.json").read_text())
    assert [(r["devices"], r["trial"]) for r in rows] == [(1, "sweep"), (2, "sweep")]
    assert all(r["answered"] >= 1 and r["batch"] >= 1.0 for r in rows)
