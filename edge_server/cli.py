"""stac-edge serve | check."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import click
import numpy as np

from stac.codec import make_codec
from stac.commands import cli_errors, tables_option
from stac.contract import MODELS
from stac.edge.server import ServerError, TritonServer
from stac.video import read_frames, sample_video


@click.group()
def main() -> None:
    """The STAC edge: a local Triton server over the model repository."""


@main.command()
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), default=Path("triton_models"),
              show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True, help="0.0.0.0 to serve other machines")
@click.option("--http-port", type=int, default=8000, show_default=True)
@click.option("--grpc-port", type=int, default=8001, show_default=True)
@click.option("--metrics-port", type=int, default=8002, show_default=True)
@click.option("--timeout", type=float, default=120.0, show_default=True, help="seconds to wait for ready")
@click.option("--admin-api", is_flag=True, help="open shared-memory registration, repository control, trace and "
              "log settings to every client (restricted by default)")
def serve(repo, address, http_port, grpc_port, metrics_port, timeout, admin_api) -> None:
    """Start tritonserver on REPO and keep it up until Ctrl-C or SIGTERM."""
    with cli_errors(ServerError):
        server = TritonServer(repo, address=address, http_port=http_port, grpc_port=grpc_port,
                              metrics_port=metrics_port, ready_timeout=timeout, admin_api=admin_api)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    try:
        with cli_errors(ServerError):
            server.start()
            click.echo(f"ready: grpc://{server.grpc_url} http://{server.http_url} (log {server.log_path})", err=True)
            while not stop and server.process.poll() is None:
                time.sleep(0.2)
            if server.process.poll() is not None:
                raise ServerError(f"tritonserver exited with {server.process.returncode}:\n{server.log_tail()}")
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
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
