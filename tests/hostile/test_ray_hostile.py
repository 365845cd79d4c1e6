"""``--ray`` on hostile settings: each fails in one line, before work starts, within a deadline.

An address where nothing listens is refused by a TCP check (``CONNECT_TIMEOUT_S``) before ``ray.init``,
which alone retries for minutes; GPUs no node has are refused after joining, before any actor waits for them
forever; a ``--num-gpus`` of NaN is refused by argparse's neighbour, ``check_scalar``.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tryage.cli import main

ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed (pip install 'tryage[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'tryage[ray]')")


@pytest.fixture()
def qtable(tmp_path: Path) -> Path:
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"def python code {i}", "losses": {"a": 0.1 * i, "b": 0.5}}) + "\n"
                            for i in range(1, 7)), encoding="utf-8")
    return path


def _train(qtable: Path, *ray_options: str) -> list[str]:
    return ["train", "--qtable", str(qtable), "--out", str(qtable.parent / "router"), "--epochs", "1", "--ray",
            *ray_options]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(("options", "shown"), [
    (["--num-gpus", "nan"], "--num-gpus must be a finite number >= 0, got nan"),
    (["--num-gpus", "inf"], "--num-gpus must be a finite number >= 0, got inf"),
    (["--num-gpus", "-1"], "--num-gpus must be a finite number >= 0, got -1.0"),
    (["--workers", "0"], "--workers must be a whole number >= 1, got 0"),
    (["--num-cpus", "0"], "--num-cpus must be a whole number >= 1, got 0"),
])
def test_ray_settings_out_of_range_are_one_line_before_ray_starts(qtable: Path, capsys, options, shown) -> None:
    assert main(_train(qtable, *options)) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"tryage: error: {shown}"
    assert not ray.is_initialized()


@pytest.mark.timeout(30)  # ray.init alone would wait for minutes
def test_an_address_where_nothing_listens_is_refused_before_ray_init(qtable: Path, capsys) -> None:
    if ray.is_initialized():
        ray.shutdown()
    address = f"127.0.0.1:{_free_port()}"
    assert main(_train(qtable, "--address", address)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tryage: error: cannot connect to Ray at {address}: nothing accepts a connection")
    assert "\n" not in err
    assert not ray.is_initialized()
    assert not (qtable.parent / "router").exists()


@pytest.fixture()
def no_gpu_cluster():
    """A local Ray instance with one CPU and no GPU, whatever the machine has."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=1, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.timeout(120)  # starting Ray on a loaded 2-core machine
def test_gpus_no_node_has_are_refused_before_an_actor_waits_for_them(no_gpu_cluster, qtable: Path, capsys) -> None:
    assert main(_train(qtable, "--num-gpus", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tryage: error: num_gpus=1: each actor would reserve 1 GPU(s), but no node of the Ray "
                          "cluster has that many (the most on one node: 0)"), err
    assert not (qtable.parent / "router").exists()
