"""stac-edge serve | proxy | check."""
from __future__ import annotations

import functools
import signal
import time
from pathlib import Path

import click
import numpy as np

from stac.codec import make_codec
from stac.commands import cli_errors, tables_option
from stac.contract import MODELS
from stac.edge.proxy import Deployment, Limits, Proxy, Upstream
from stac.edge.server import ServerError, TritonServer
from stac.video import read_frames, sample_video


LIMITS = (("max_in_flight", "requests each server runs at once"),
          ("max_queue", "requests that wait for each server beyond those"),
          ("queue_ms", "the longest a request waits before it is refused"))


def limits_options(prefix: str = ""):
    """--max-in-flight, --max-queue and --queue-ms, given to the command as ``limits`` (the proxy's Limits)."""
    def decorate(function):
        @functools.wraps(function)
        def with_limits(*args, max_in_flight, max_queue, queue_ms, **kwargs):
            with cli_errors():
                limits = Limits(max_in_flight, max_queue, queue_ms)
            return function(*args, limits=limits, **kwargs)

        for name, help in reversed(LIMITS):
            with_limits = click.option(f"--{name.replace('_', '-')}", type=int, default=getattr(Limits, name),
                                       show_default=True, help=prefix + help)(with_limits)
        return with_limits
    return decorate


@click.group()
def main() -> None:
    """The STAC edge: a local Triton server over the model repository."""


@main.command()
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), default=Path("triton_models"),
              show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True, help="0.0.0.0 to serve other machines")
@click.option("--http-port", type=int, default=8000, show_default=True)
@click.option("--grpc-port", type=int, default=8001, show_default=True)
@click.option("--metrics-port", type=int, default=8002, show_default=True, help="one server's (without --proxy)")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="seconds to wait for ready")
@click.option("--admin-api", is_flag=True, help="open shared-memory registration, repository control, trace and "
              "log settings to every client (restricted by default)")
@click.option("--proxy", is_flag=True, help="HAProxy on the ports, in front of --servers Triton servers: each device "
              "kept on one server, refusals past the limits below, failover when a server dies")
@click.option("--servers", type=int, default=1, show_default=True, help="with --proxy: Triton servers behind it")
@limits_options("with --proxy: ")
def serve(repo, address, http_port, grpc_port, metrics_port, timeout, admin_api, proxy, servers, limits) -> None:
    """Start tritonserver on REPO (or --servers of them behind --proxy) and keep it up until Ctrl-C or SIGTERM. Behind
    the proxy a server that dies is started again; its devices are served by the others meanwhile."""
    with cli_errors(ServerError):
        if servers != 1 and not proxy:
            raise ValueError("--servers needs --proxy (one address in front of them)")
        if proxy:
            edge = Deployment(repo, servers, address=address, grpc_port=grpc_port, http_port=http_port,
                              limits=limits, ready_timeout=timeout, admin_api=admin_api)
        else:
            edge = TritonServer(repo, address=address, http_port=http_port, grpc_port=grpc_port,
                                metrics_port=metrics_port, ready_timeout=timeout, admin_api=admin_api)
    _supervise(edge)


@main.command()
@click.option("--server", "servers", multiple=True, required=True,
              help="HOST:GRPC_PORT:HTTP_PORT of a Triton server (`stac-edge serve --address 0.0.0.0` on its "
              "machine); repeatable")
@click.option("--address", default="0.0.0.0", show_default=True)
@click.option("--http-port", type=int, default=8000, show_default=True)
@click.option("--grpc-port", type=int, default=8001, show_default=True)
@limits_options()
def proxy(servers, address, http_port, grpc_port, limits) -> None:
    """HAProxy in front of Triton servers running elsewhere (one per GPU): each device kept on one server, refusals
    past the limits, failover when a server dies. Runs until Ctrl-C or SIGTERM."""
    with cli_errors(ServerError):
        edge = Proxy([Upstream.parse(spec) for spec in servers], address=address, grpc_port=grpc_port,
                     http_port=http_port, limits=limits)
    _supervise(edge)


def _supervise(edge: TritonServer | Deployment | Proxy) -> None:
    """Start ``edge``, report what its watch() says, stop it on Ctrl-C or SIGTERM."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    try:
        with cli_errors(ServerError):
            edge.start()
            click.echo(f"ready: grpc://{edge.grpc_url} http://{edge.http_url} ({edge.describe()})", err=True)
            while not stop:
                time.sleep(0.2)
                for line in edge.watch():
                    click.echo(line, err=True)
    except KeyboardInterrupt:
        pass
    finally:
        edge.stop()
        click.echo("stopped", err=True)


@main.command()
@click.argument("url")
@tables_option("the table set the edge holds (to code a real keyframe)", default="triton_models/tables.json")
@click.option("--wait", type=float, default=10.0, show_default=True)
def check(url, tables, wait) -> None:
    """Health, model list and one real keyframe (carphone, STAC-coded) through the stac ensemble."""
    from stac.edge.client import EdgeError, TritonEdge, check_table_set

    with cli_errors(EdgeError):
        edge = TritonEdge(url)
        edge.wait_ready(wait)
        check_table_set(edge, tables)
        models = [name for name in MODELS if edge.client.is_model_ready(name)]  # no repository API needed
        frame = next(iter(read_frames(sample_video("carphone"), 1)))
        data = make_codec("stac", tables).encode(frame)
        started = time.perf_counter()
        answer = edge.segment(data, "stac", frame.shape[:2])
        ms = (time.perf_counter() - started) * 1e3
    click.echo(f"{url}: ready; models {', '.join(sorted(models))}; table set {tables.id.hex()}")
    click.echo(f"one keyframe ({len(data)} B, 176x144): {ms:.1f} ms, answer {answer.payload} B (coded mask of classes "
               f"{np.unique(answer.mask).tolist()} and next levels {answer.next_levels.shape}; raw: "
               f"{answer.mask.size + answer.next_levels.size} B)")


if __name__ == "__main__":
    main()
