"""check-leakage on a real Dask cluster (`distributed.LocalCluster`: worker processes on the loopback).

The report must be the local run's, byte for byte, also when a worker is killed mid-run; a re-run
over an unchanged dataset submits no task.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import dask
import leakage_dataset
import pytest
from click.testing import CliRunner
from contribution_helpers import (
    make_synthetic_dataset,
    noise_png,
    write_contribution_sheet,
)
from distributed import Client, LocalCluster
from test_leakage_real import real_cache, real_report  # noqa: F401  (the local run, shared per session)

from ctcurate.cli import main
from ctcurate.core.layout import IMAGES_DIR
from ctcurate.leakage.execution import ClusterUnavailable, DaskCluster
from ctcurate.leakage.pipeline import check_leakage
from ctcurate.leakage.report import to_json


def _cluster() -> LocalCluster:
    return LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.ERROR)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with _cluster() as c:
        yield c


def _tasks_run(cluster: LocalCluster) -> int:
    """Tasks the scheduler has seen finish since it started."""
    return sum(p.state_counts["memory"] for p in cluster.scheduler.task_prefixes.values())


@pytest.fixture()
def copies(real_data: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The small transformed-copy set (resized, re-compressed, annotated, mirrored copies; a broken file)."""
    root = tmp_path / "copies"
    return root, leakage_dataset.build(root, real_data)


def _square(x: int) -> int:
    return x * x


def test_cluster_map_keeps_the_order_of_the_items(cluster):
    with DaskCluster(cluster.scheduler_address, most_per_batch=3) as ex:
        assert list(ex.map(_square, list(range(50)))) == [x * x for x in range(50)]
        assert ex.submitted == 25  # batches of 2: about 16 per worker thread
        assert list(ex.map(_square, [])) == []


def test_unreachable_scheduler_is_one_line_and_exit_2(tmp_path):
    (tmp_path / IMAGES_DIR / "CT_COVID").mkdir(parents=True)
    with pytest.raises(ClusterUnavailable, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        DaskCluster("tcp://127.0.0.1:9", timeout=1)
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        res = CliRunner().invoke(main, ["check-leakage", "--data", str(tmp_path)], env={"CTCURATE_SCHEDULER": "tcp://127.0.0.1:9"})
    assert res.exit_code == 2
    assert res.stderr.startswith("error: --scheduler: cannot reach the Dask scheduler at tcp://127.0.0.1:9")
    assert len(res.stderr.splitlines()) == 1


def test_transformed_copies_give_the_local_report_through_the_cli(cluster, copies, tmp_path):
    root, meta = copies
    args = ["check-leakage", "--data", str(root), "--metadata", str(meta), "--format", "json"]
    local = CliRunner().invoke(main, [*args, "--cache", str(tmp_path / "local.sqlite")])
    before = _tasks_run(cluster)
    remote = CliRunner().invoke(main, [*args, "--cache", str(tmp_path / "remote.sqlite")], env={"CTCURATE_SCHEDULER": cluster.scheduler_address})
    assert _tasks_run(cluster) > before  # the images were hashed on the cluster
    assert (remote.exit_code, remote.stdout) == (local.exit_code, local.stdout)
    assert local.exit_code == 1 and '"image.unreadable"' in local.stdout


def test_real_images_give_the_local_report_and_a_rerun_submits_nothing(cluster, real_data, repo_metadata, real_report, tmp_path):  # noqa: F811
    local = real_report
    before = _tasks_run(cluster)
    remote = check_leakage(real_data, metadata_dir=repo_metadata, cache_path=tmp_path / "remote.sqlite", scheduler=cluster.scheduler_address)
    assert _tasks_run(cluster) > before
    assert to_json(remote) == to_json(local)
    assert len(remote.pairs) >= 11
    after_first = _tasks_run(cluster)
    again = check_leakage(real_data, metadata_dir=repo_metadata, cache_path=tmp_path / "remote.sqlite", scheduler=cluster.scheduler_address)
    assert _tasks_run(cluster) == after_first
    assert to_json(again) == to_json(local)


def test_a_worker_killed_mid_run_changes_nothing(copies, real_data, tmp_path):
    root, meta = copies
    for k in range(80):  # work for many batches; pictures unlike any other, so nothing more to verify
        noise_png(root / IMAGES_DIR / "CT_NonCOVID" / f"noise{k}.png", k, size=(384, 320))
    local = check_leakage(root, metadata_dir=meta, cache_path=tmp_path / "local.sqlite", jobs=2)
    with _cluster() as cl, Client(cl.scheduler_address) as client:
        pids = client.run(os.getpid)
        killed: list[int] = []

        def kill_a_busy_worker(step: str, done: int, total: int) -> None:
            if step == "hashing" and done > 0 and not killed:
                busy = [addr for addr, keys in client.processing().items() if keys]
                assert busy, "no task was running when the worker was to be killed"
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed.append(pids[busy[0]])

        remote = check_leakage(root, metadata_dir=meta, cache_path=tmp_path / "remote.sqlite", progress=kill_a_busy_worker, scheduler=cl.scheduler_address)
    assert killed
    assert to_json(remote) == to_json(local)


def test_add_contribution_checks_duplicates_on_the_cluster(cluster, tmp_path):
    ds = make_synthetic_dataset(tmp_path / "ds")
    contrib = tmp_path / "contrib"
    noise_png(contrib / "new.png", 7)
    shutil.copyfile(ds / IMAGES_DIR / "CT_COVID" / "paper-a-p1-1%0.png", contrib / "copy.png")
    write_contribution_sheet(contrib / "sheet.xlsx", [
        {"File name": n, "Label": "COVID", "Patient ID": "A", "DOI": "10.5555/fresh", "Captions": "Figure 1."} for n in ("new.png", "copy.png")
    ])
    args = ["add-contribution", str(contrib), "--data", str(ds), "--metadata", str(ds / "metadata"), "--dry-run"]
    local = CliRunner().invoke(main, args)
    before = _tasks_run(cluster)
    remote = CliRunner().invoke(main, [*args, "--scheduler", cluster.scheduler_address])
    assert _tasks_run(cluster) > before
    assert (remote.exit_code, remote.output) == (local.exit_code, local.output)
    assert local.exit_code == 1 and "copy.png" in local.output
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        down = CliRunner().invoke(main, [*args, "--scheduler", "tcp://127.0.0.1:9"])
    assert down.exit_code == 2
    assert down.stderr == "error: cannot reach the Dask scheduler at tcp://127.0.0.1:9: Timed out trying to connect to tcp://127.0.0.1:9 after 1 s\n"
