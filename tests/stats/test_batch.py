"""``ceimap batch`` on dask.distributed: same results as serial runs, failures isolated, external scheduler."""

import json

import numpy as np
import pandas as pd
import pytest
import tifffile

pytest.importorskip("distributed")

from ceimap.segment.errors import CeimapInputError  # noqa: E402
from ceimap.stats.batch import plan_batch, run_batch  # noqa: E402


def _bad_manifest(folder, name="broken"):
    folder.mkdir(parents=True, exist_ok=True)
    m = folder / "lamella.toml"
    m.write_text(f'name = "{name}"\nsample = "s"\n[sem]\npath = "missing_sem.tif"\npixel_size_nm = 10.0\n'
                 '[[stxm]]\nedge = "Ni-L"\npath = "missing_ni.hdf5"\n')
    return m


def test_plan_refuses_missing_duplicate_and_malformed_manifests(tmp_path):
    good = _bad_manifest(tmp_path / "a", name="lamella one")
    with pytest.raises(CeimapInputError, match="not found"):
        plan_batch([tmp_path / "nope.toml"], tmp_path / "out")
    with pytest.raises(CeimapInputError, match="listed twice"):
        plan_batch([good, good], tmp_path / "out")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "lamella.toml").write_text("name = [unclosed")
    with pytest.raises(CeimapInputError, match="not a readable LAMELLA.toml"):
        plan_batch([good, tmp_path / "b" / "lamella.toml"], tmp_path / "out")
    twin = _bad_manifest(tmp_path / "c", name="lamella one")
    plan = plan_batch([good, twin], tmp_path / "out")
    assert [p["out"].split("/")[-1] for p in plan] == ["lamella_one", "lamella_one_2"]  # unique folders


def test_failing_lamellae_are_reported_and_do_not_stop_the_batch(tmp_path):
    m1 = _bad_manifest(tmp_path / "in1", "first")
    m2 = _bad_manifest(tmp_path / "in2", "second")
    out = tmp_path / "batch"
    result = run_batch([m1, m2], out, n_workers=2)
    assert result["n_ok"] == 0 and result["n_failed"] == 2
    for rec in result["lamellae"]:
        assert rec["status"] == "failed" and rec["error_kind"] == "input"
        assert "missing_sem.tif" in rec["error"]  # names the file
    saved = json.loads((out / "batch.json").read_text())
    assert saved["n_failed"] == 2
    assert not (out / "first").exists()  # no half-written run folder


@pytest.fixture(scope="module")
def small_lamella(small_lamella_manifest):
    return small_lamella_manifest


@pytest.mark.slow
def test_batch_on_an_external_scheduler_equals_the_serial_run(small_lamella, tmp_path):
    from distributed import LocalCluster

    from ceimap.segment.io import read_lamella
    from ceimap.stats.cli import main
    from ceimap.stats.run import run_lamella

    serial = tmp_path / "serial"
    run_lamella(read_lamella(small_lamella), serial)
    bad = _bad_manifest(tmp_path / "bad_in", "broken")
    out = tmp_path / "batch"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        code = main(["batch", str(small_lamella), str(bad), "--out", str(out), "--scheduler",
                     cluster.scheduler_address])
    assert code == 1  # one lamella failed: reported, the other finished
    saved = json.loads((out / "batch.json").read_text())
    assert saved["n_ok"] == 1 and saved["n_failed"] == 1
    assert saved["scheduler"] == cluster.scheduler_address
    run = out / read_lamella(small_lamella).name
    for name in ("classes.tif", "particles.tif", "egt2g.tif"):
        assert np.array_equal(tifffile.imread(run / name), tifffile.imread(serial / name), equal_nan=True), name
    for name in ("particles.csv", "thickness.csv", "pixels.csv"):
        assert (run / name).read_bytes() == (serial / name).read_bytes(), name
    a, b = (json.loads((d / "summary.json").read_text()) for d in (run, serial))
    for d in (a, b):  # the time of day and how long each step took are the only things allowed to differ
        d["provenance"].pop("created_utc"), d["provenance"].pop("timings_s", None)
    assert a == b
    table = pd.read_csv(out / "batch_particles.csv")
    assert set(table["lamella"]) == {a["name"]} and len(table) == a["n_particles"]


def _malloc_trim_threshold():
    import os

    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_local_cluster_workers_keep_glibc_malloc_thresholds(monkeypatch):
    """dask's default MALLOC_TRIM_THRESHOLD_ (every array above 128 KiB a fresh mmap: 5x the system time of a run)
    is not given to the batch's workers, even when an earlier cluster left it in this process's environment;
    dask's one-thread-per-worker settings are."""
    from ceimap.stats.batch import _client

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # as a nanny started before leaves it
    client, cluster = _client(None, 1)
    try:
        assert set(client.run(_malloc_trim_threshold).values()) == {None}
        assert set(client.run(lambda: __import__("os").environ.get("OMP_NUM_THREADS")).values()) == {"1"}
    finally:
        client.close()
        cluster.close()
    assert __import__("os").environ.get("MALLOC_TRIM_THRESHOLD_") == "65536"  # put back
