import numpy as np
import pytest

from stac.tables import TableSet
from stac.video import read_frames, sample_video


@pytest.fixture(scope="session")
def bikes_frames() -> list[np.ndarray]:
    """Real street-scene frames (640x272) from the bikes sample clip."""
    return list(read_frames(sample_video("bikes"), max_frames=8))


@pytest.fixture(scope="session")
def carphone_frames() -> list[np.ndarray]:
    """Real frames of another clip (176x144: neither a multiple of 24 nor of 16 in width)."""
    return list(read_frames(sample_video("carphone"), max_frames=4))


@pytest.fixture(scope="session")
def default_tables() -> TableSet:
    return TableSet.default()


def tables_with_levels(levels: int) -> TableSet:
    base = TableSet.default()
    return TableSet.from_gradients(base.gradients, base.bound, base.num_coeffs, base.model, levels=levels,
                                   ratio=2 ** (4 / levels))


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Export a model's ONNX graphs once per test session: exported("selfie") -> folder."""
    from stac.models.to_onnx import export_model

    folders = {}

    def get(name: str):
        if name not in folders:
            folders[name] = tmp_path_factory.mktemp(f"onnx-{name}")
            export_model(name, folders[name])
        return folders[name]

    return get


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test that used a running tritonserver reports how that server is (alive, or how it ended; /dev/shm)
    and its log's errors: a server that dies mid-run is otherwise only 'connection refused' in the next test."""
    from stac.edge.server import TritonServer

    report = (yield).get_result()
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, TritonServer):
                report.sections.append(("tritonserver", f"{value.state()}\n{value.log_tail()}"))
