"""An edge of several Triton servers behind HAProxy: one address for devices, refusal under overload, failover.

Devices reach the proxy over gRPC (HTTP/2) or HTTP, as they would one server. Each request carries its device's ID
in the ``stac-device`` header (``stac.edge.client.TritonEdge``), which the proxy hashes (consistent hashing) onto a
server: a device's H.264 stream stays where its decoder is, and when that server dies only its own devices move. A
moved device's next P-frame is refused with NEED_IDR by a server that never saw its stream, and its next keyframe
restarts the stream there with an IDR (``stac.edge.streams``).

Overload is refused in front of the servers, not inside them: each server gets at most ``max_in_flight`` requests at
once (Triton queues them behind its graphs), ``max_queue`` more wait in the proxy, and a request not sent on to a
server within ``queue_ms`` is answered 503. Triton's own queue policy cannot do this (docs/edge.md: in Triton 2.51
any queue policy stalls its batcher). A device takes the 503 as any edge error (``EdgeError.refused``):
it backs off, carries its masks, and comes back when load falls.

Health: the proxy polls each server's /v2/health/ready every ``check_ms``; one failure takes the server out, two
successes bring it back. A request whose server fails to connect is sent once more, to another server.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..contract import DEVICE_HEADER
from .server import Child, Endpoint, ServerError, TritonServer, check_port, free_port, spawn


@dataclass(frozen=True)
class Limits:
    """What the proxy lets through to each server, and how fast it refuses the rest."""
    max_in_flight: int = 8  # requests one server runs at once (per protocol)
    max_queue: int = 4  # requests that wait for it beyond those
    queue_ms: int = 10  # the longest a request waits before it is refused
    check_ms: int = 250  # health-check interval

    def __post_init__(self):
        if self.max_in_flight < 1 or self.max_queue < 1 or self.queue_ms < 1 or self.check_ms < 1:
            raise ValueError(f"proxy limits must be >= 1 (got {self})")


@dataclass(frozen=True)
class Upstream(Endpoint):
    """A Triton server the proxy sends to, running elsewhere (a TritonServer started here is one too)."""
    address: str
    grpc_port: int
    http_port: int

    @classmethod
    def parse(cls, spec: str) -> "Upstream":
        """HOST:GRPC_PORT:HTTP_PORT."""
        parts = spec.rsplit(":", 2)
        host, ports = parts[0], [int(p) if p.isdigit() else 0 for p in parts[1:]]
        if len(parts) != 3 or not host or not all(1 <= p <= 65535 for p in ports):
            raise ValueError(f"a server is HOST:GRPC_PORT:HTTP_PORT (e.g. 10.0.0.2:8001:8000), got {spec!r}")
        return cls(host, *ports)


def haproxy_config(servers: list[Endpoint], address: str, grpc_port: int, http_port: int,
                   limits: Limits = Limits()) -> str:
    """HAProxy 2.6's configuration: a gRPC (HTTP/2) and an HTTP frontend, each over every server."""
    lines = ["global", "    log stderr format raw local0 warning", "defaults", "    mode http",
             "    log global", "    timeout connect 1s",
             "    timeout client 1h",  # a device keeps its connection open between keyframes
             "    timeout server 60s", f"    timeout queue {limits.queue_ms}ms",
             "    retries 1", "    option redispatch",
             # the refusal's body, as Triton's HTTP errors read (gRPC clients see only the status: UNAVAILABLE)
             '    http-error status 503 content-type application/json string '
             '"{\\"error\\":\\"every server is busy or down\\"}"']
    for protocol, port in (("grpc", grpc_port), ("http", http_port)):
        lines += [f"frontend {protocol}", f"    bind {address}:{port}" + (" proto h2" if protocol == "grpc" else ""),
                  f"    default_backend {protocol}_servers",
                  f"backend {protocol}_servers", f"    balance hdr({DEVICE_HEADER})", "    hash-type consistent",
                  "    option httpchk GET /v2/health/ready"]
        for i, server in enumerate(servers):
            target = server.grpc_url if protocol == "grpc" else server.http_url
            health = (f"check port {server.http_port} check-proto h1 inter {limits.check_ms}ms fall 1 rise 2"
                      if protocol == "grpc" else f"track grpc_servers/s{i}")
            lines.append(f"    server s{i} {target}" + (" proto h2" if protocol == "grpc" else "")
                         + f" maxconn {limits.max_in_flight} maxqueue {limits.max_queue} {health}")
    return "\n".join(lines) + "\n"


class Proxy(Child):
    """A haproxy process over ``servers`` (started: here, or on other machines), listening on ``grpc_port`` and
    ``http_port``."""
    name, poll_s = "haproxy", 0.1

    def __init__(self, servers: list[Endpoint], *, address: str = "127.0.0.1",
                 grpc_port: int | None = None, http_port: int | None = None, limits: Limits = Limits(),
                 ready_timeout: float = 10.0):
        if not servers:
            raise ServerError("a proxy needs at least one server")
        self.binary = shutil.which("haproxy") or next(
            (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).is_file()), None)
        if self.binary is None:
            raise ServerError("haproxy is not installed (Debian: apt-get install haproxy; scripts/setup.sh does)")
        self.servers, self.address, self.limits, self.ready_timeout = servers, address, limits, ready_timeout
        self.grpc_port, self.http_port = grpc_port or free_port(), http_port or free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="stac-proxy-"))
        self.config_path, self.log_path = self.workdir / "haproxy.cfg", self.workdir / "haproxy.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "Proxy":
        self.config_path.write_text(haproxy_config(self.servers, self.address, self.grpc_port, self.http_port,
                                                   self.limits))
        check = subprocess.run([self.binary, "-c", "-q", "-f", str(self.config_path)], capture_output=True, text=True)
        if check.returncode:
            raise ServerError(f"haproxy refused its configuration:\n{check.stdout}{check.stderr}")
        for port in (self.grpc_port, self.http_port):
            check_port(self.address, port)
        self.log = open(self.log_path, "wb")
        self.process = spawn([self.binary, "-db", "-f", str(self.config_path)], self.log)
        self._await_ready(self.ready_timeout)
        return self

    def ready(self) -> bool:
        """haproxy listens (its servers may come up later: it sends them requests once their checks pass)."""
        host = "127.0.0.1" if self.address in ("0.0.0.0", "") else self.address.strip("[]")
        try:
            socket.create_connection((host, self.http_port), timeout=1).close()
            return True
        except OSError:
            return False

    def describe(self) -> str:
        return f"servers {', '.join(s.grpc_url for s in self.servers)} (gRPC); log {self.log_path}"

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "log", None):
            self.log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Proxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Deployment(Endpoint):
    """``count`` Triton servers on ``repo`` (on free local ports) behind one Proxy on the public ports: the edge a
    fleet of devices sees, on one machine (docs/edge.md gives its shape across machines)."""

    def __init__(self, repo: str | Path, count: int = 2, *, address: str = "127.0.0.1", grpc_port: int | None = None,
                 http_port: int | None = None, limits: Limits = Limits(), ready_timeout: float = 120.0,
                 admin_api: bool = False):
        if count < 1:
            raise ServerError(f"a deployment needs at least one server (got {count})")
        self.servers = [TritonServer(repo, ready_timeout=ready_timeout, admin_api=admin_api) for _ in range(count)]
        self.proxy = Proxy(self.servers, address=address, grpc_port=grpc_port, http_port=http_port, limits=limits)
        self.address, self.grpc_port, self.http_port = address, self.proxy.grpc_port, self.proxy.http_port

    def start(self) -> "Deployment":
        try:
            for server in self.servers:
                server.start()
            self.proxy.start()
        except BaseException:
            self.stop()
            raise
        return self

    def describe(self) -> str:
        return "; ".join([f"server {i} grpc://{s.grpc_url} http://{s.http_url} ({s.describe()})"
                          for i, s in enumerate(self.servers)] + [f"proxy log {self.proxy.log_path}"])

    def watch(self) -> list[str]:
        """Start again each server that died (the proxy sends its devices to the others meanwhile, and back to it
        once it is ready): what was done, for a supervisor's log. ServerError once the proxy has died."""
        lines = self.proxy.watch()
        for i, server in enumerate(self.servers):
            if server.process is not None and server.process.poll() is None:
                continue
            lines.append(f"server {i} died ({server.state()}); its log ended:\n{server.log_tail(5, errors=False)}\n"
                         f"starting it again")
            server.stop()
            self.servers[i] = server = server.again()
            try:
                server.start()
                lines.append(f"server {i} ready again ({server.describe()})")
            except ServerError as e:  # tried again at the next call
                lines.append(f"server {i} did not start: {e}")
        return lines

    def stop(self) -> None:
        self.proxy.stop()
        for server in self.servers:
            server.stop()

    def __enter__(self) -> "Deployment":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
