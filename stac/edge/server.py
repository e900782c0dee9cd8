"""A real tritonserver from the nvidia-pytriton wheel, started, waited for, and stopped cleanly.

The wheel carries tritonserver and its python backend but not the backend stub in place: we build a
backend directory of links (the stub finds its Python through PATH, so this interpreter's bin goes first),
give the python backend a unique shared-memory prefix (so parallel servers never collide, and we remove
exactly our own /dev/shm files), and poll /v2/health/ready with a deadline: a stub that cannot start
would otherwise hang model loading forever. The server dies with the process that started it (Linux's
parent-death signal, when started from the main thread), so a killed `stac-edge serve` leaves no server holding
the ports; ports already taken are refused before starting, so "ready" is always our own server's answer.
Stopping removes the work folder and our shared memory; starting removes the shared memory that servers of
killed owners left.
"""
from __future__ import annotations

import ctypes
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import NoReturn


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wheel_root() -> Path:
    try:
        import pytriton
    except ImportError:
        raise ServerError("tritonserver comes from the nvidia-pytriton wheel: pip install 'stac[edge]'") from None
    root = Path(pytriton.__file__).parent / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise ServerError(f"no tritonserver binary in {root}")
    return root


PR_SET_PDEATHSIG = 1
RESTRICTED = ("shared-memory", "model-repository", "trace", "logging")  # Triton's API groups a device never uses
ADMIN_HEADER = "stac-admin-key"


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the parent dies (prctl; a no-op where there is none)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def spawn(command: list[str], log, env: dict | None = None) -> subprocess.Popen:
    """``command`` in its own process group, its output to ``log``, killed when this process dies: the parent-death
    signal fires when the *thread* that started the child ends, so it is asked for only from the main thread (the
    one that lives as long as the process)."""
    main = threading.current_thread() is threading.main_thread()
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                            preexec_fn=_die_with_parent if main else None)


def check_port(address: str, port: int) -> None:
    """ServerError unless ``port`` (in range: TritonServer checks that first) is free on ``address``."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as tritonserver binds: TIME_WAIT is no owner
        try:
            s.bind((address, port))
        except OSError as e:
            raise ServerError(f"port {port} on {address} is in use or not available ({e.strerror}): another "
                              f"server, or one left behind, holds it") from None


def remove_orphaned_memory() -> None:
    """Remove the shared memory of servers whose owner died without stopping them (SIGKILL, a crash): their
    tritonserver died with it (the parent-death signal), but /dev/shm is memory that stays taken until removed.
    A region's name carries its owner's pid (TritonServer.prefix)."""
    for region in Path("/dev/shm").glob("stac*x*"):
        owner = re.fullmatch(r"stac(\d+)x.*", region.name)
        if owner and not _alive(int(owner[1])):
            region.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        pass
    return True


class Endpoint:
    """What devices connect to (a server, a proxy): ``address``, with gRPC on ``grpc_port`` and HTTP on
    ``http_port``."""
    address: str
    grpc_port: int
    http_port: int

    @property
    def grpc_url(self) -> str:
        return f"{self.address}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.address}:{self.http_port}"


class Child(Endpoint):
    """An Endpoint served by a child process (``spawn``) named ``name``: waiting until it is ready, and its log's
    tail (``log_tail()``) in the error when it fails to start or dies."""
    name: str
    poll_s: float  # how often the wait for ready looks
    process: subprocess.Popen | None

    def ready(self) -> bool:
        raise NotImplementedError

    def log_tail(self) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _await_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._fail(f"{self.name} exited with {self.process.returncode}")
            if self.ready() and self.process.poll() is None:
                return
            time.sleep(self.poll_s)
        self._fail(f"{self.name} not ready after {timeout:g} s")

    def _fail(self, what: str) -> NoReturn:
        tail = self.log_tail()  # before stop() removes the work folder
        self.stop()
        raise ServerError(f"{what}:\n{tail}")

    def watch(self) -> list[str]:
        """What happened since the last call, for a supervisor's log; ServerError once the process has died."""
        if self.process is not None and self.process.poll() is not None:
            raise ServerError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
        return []


class TritonServer(Child):
    name, poll_s = "tritonserver", 0.25

    def __init__(self, repo: str | Path, *, address: str = "127.0.0.1", http_port: int | None = None,
                 grpc_port: int | None = None, metrics_port: int | None = None, ready_timeout: float = 120.0,
                 log_path: str | Path | None = None, exit_on_error: bool = True, admin_api: bool = False,
                 trace_path: str | Path | None = None):
        """exit_on_error=False keeps the server up when some model fails to load (and then "ready" means
        live: for inspecting a repository). Unless ``admin_api``, the APIs a device never needs (RESTRICTED: shared
        memory registration, repository control, trace and log settings) answer only requests that carry
        ``admin_headers(scheme)``, with a key made for this server and never printed. ``trace_path``: every
        request's timestamps (Triton's trace, monotonic clock ns) written to files ``trace_path.N``, one per
        request as it ends."""
        self.repo = Path(repo).resolve()
        if not self.repo.is_dir():
            raise ServerError(f"model repository {self.repo} does not exist (python export/build.py builds it)")
        if not any(self.repo.glob("*/config.pbtxt")):
            raise ServerError(f"model repository {self.repo} holds no models (python export/build.py builds it)")
        self.address, self.ready_timeout = address, ready_timeout
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        if len({self.http_port, self.grpc_port, self.metrics_port}) < 3:
            raise ServerError("the HTTP, gRPC and metrics ports must differ")
        for port in (self.http_port, self.grpc_port, self.metrics_port):
            if not 1 <= port <= 65535:
                raise ServerError(f"port {port} is out of range (1..65535)")
        self.admin_key = None if admin_api else secrets.token_hex(16)
        self.prefix = f"stac{os.getpid()}x{uuid.uuid4().hex[:8]}"  # the owner's pid: see remove_orphaned_memory
        self.workdir = Path(tempfile.mkdtemp(prefix="stac-triton-"))
        self.log_path = Path(log_path) if log_path else self.workdir / "tritonserver.log"
        self.process: subprocess.Popen | None = None
        self.exit_on_error = exit_on_error
        self.trace_path = Path(trace_path) if trace_path else None

    def admin_headers(self, scheme: str = "http") -> dict[str, str]:
        """What opens the restricted APIs to a tritonclient request (gRPC prefixes the header's name)."""
        if not self.admin_key:
            return {}
        return {("triton-grpc-protocol-" if scheme == "grpc" else "") + ADMIN_HEADER: self.admin_key}

    def _backends(self, root: Path) -> Path:
        python = self.workdir / "backends" / "python"
        python.mkdir(parents=True)
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        links = {"libtriton_python.so": root / "backends" / "python" / "libtriton_python.so",
                 "triton_python_backend_utils.py": root / "backends" / "python" / "triton_python_backend_utils.py",
                 "triton_python_backend_stub": root / "python_backend_stubs" / version / "triton_python_backend_stub"}
        for name, target in links.items():
            if not target.exists():
                raise ServerError(f"the pytriton wheel lacks {target}")
            (python / name).symlink_to(target)
        return self.workdir / "backends"

    def start(self) -> "TritonServer":
        root = _wheel_root()
        command = [str(root / "bin" / "tritonserver"), f"--model-repository={self.repo}",
                   f"--backend-directory={self._backends(root)}",
                   f"--http-address={self.address}", f"--http-port={self.http_port}",
                   f"--grpc-address={self.address}", f"--grpc-port={self.grpc_port}",
                   f"--metrics-address={self.address}", f"--metrics-port={self.metrics_port}",
                   "--allow-gpu-metrics=false", f"--backend-config=python,shm-region-prefix-name={self.prefix}",
                   f"--exit-on-error={str(self.exit_on_error).lower()}",
                   f"--strict-readiness={str(self.exit_on_error).lower()}"]
        if self.trace_path:
            command += [f"--trace-config=triton,file={self.trace_path}", "--trace-config=triton,log-frequency=1",
                        "--trace-config=level=TIMESTAMPS", "--trace-config=rate=1"]
        if self.admin_key:
            key = f"{','.join(RESTRICTED)}:{ADMIN_HEADER}={self.admin_key}"
            command += [f"--http-restricted-api={key}", f"--grpc-restricted-protocol={key}"]
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        for port in (self.http_port, self.grpc_port, self.metrics_port):
            check_port(self.address, port)
        remove_orphaned_memory()
        self.log = open(self.log_path, "wb")
        self.process = spawn(command, self.log, env)
        self._await_ready(self.ready_timeout)
        return self

    def again(self) -> "TritonServer":
        """A server like this one, on its ports, to start once this one has stopped."""
        return TritonServer(self.repo, address=self.address, http_port=self.http_port, grpc_port=self.grpc_port,
                            metrics_port=self.metrics_port, ready_timeout=self.ready_timeout,
                            exit_on_error=self.exit_on_error, admin_api=self.admin_key is None,
                            trace_path=self.trace_path)

    def describe(self) -> str:
        return f"pid {self.process.pid if self.process else '-'}, metrics :{self.metrics_port}, log {self.log_path}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def state(self) -> str:
        """One line for a post-mortem: whether the process runs (or how it ended) and how full /dev/shm is, where the
        python backend's stubs exchange every tensor (a full one kills them with SIGBUS)."""
        if self.process is None:
            run = "not started"
        elif (code := self.process.poll()) is None:
            run = f"pid {self.process.pid} running"
        else:
            run = f"pid {self.process.pid} " + (f"killed by signal {-code}" if code < 0 else f"exited with {code}")
        try:
            shm = shutil.disk_usage("/dev/shm")
            ours = sum(f.stat().st_size for f in self.shared_memory_files())
        except OSError as e:
            return f"tritonserver {run}; /dev/shm unreadable ({e})"
        return (f"tritonserver {run}; /dev/shm {shm.used / 2 ** 20:.0f} of {shm.total / 2 ** 20:.0f} MB used, "
                f"{ours / 2 ** 20:.0f} MB of it this server's")

    def log_tail(self, lines: int = 40, errors: bool = True) -> str:
        """The log's error lines (Triton prefixes them with E) unless not ``errors``, then its last lines."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        flagged = [line for line in text[:-lines] if errors and line.startswith("E")]
        return "\n".join(flagged + text[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL to the whole process group; then our own shared memory is removed."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process is not None:
            try:  # stubs left behind by a killed server
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for leftover in Path("/dev/shm").glob(f"{self.prefix}*"):
            leftover.unlink(missing_ok=True)
        if getattr(self, "log", None):
            self.log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def shared_memory_files(self) -> list[Path]:
        return sorted(Path("/dev/shm").glob(f"{self.prefix}*"))

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
