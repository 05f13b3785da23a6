"""``ceimap run`` with its worker process gives what ``run_lamella`` gives alone, file for file.

The command starts one spawned worker that preprocesses and registers the second edge and later draws half of
the report (:func:`ceimap.stats.cli._worker_pool`, :func:`ceimap.stats.report.render_report`); nothing in the results may
depend on that. Only the run's time stamps (``created_utc``, step timings, the report's "rendered" line)
differ between two runs.
"""

from __future__ import annotations

import json
import re

import pytest

from ceimap.stats.cli import main
from ceimap.stats.run import run_lamella


def _without_run_stamps(summary: dict) -> dict:
    prov = dict(summary.get("provenance", {}))
    prov.pop("created_utc", None)
    prov.pop("timings_s", None)
    return {**summary, "provenance": prov}


@pytest.mark.slow
def test_run_command_with_its_worker_equals_serial_run(small_lamella_manifest, tmp_path, monkeypatch):
    from ceimap.segment.io import read_lamella

    monkeypatch.setattr("os.cpu_count", lambda: 2)  # the command takes its worker even on a one-core runner
    assert main(["run", str(small_lamella_manifest), "--out", str(tmp_path / "command")]) == 0
    run_lamella(read_lamella(small_lamella_manifest), tmp_path / "serial", workers=1)

    command = sorted(p.name for p in (tmp_path / "command").iterdir())
    assert command == sorted(p.name for p in (tmp_path / "serial").iterdir())
    for name in command:
        a, b = (tmp_path / "command" / name).read_bytes(), (tmp_path / "serial" / name).read_bytes()
        if name == "summary.json":
            assert _without_run_stamps(json.loads(a)) == _without_run_stamps(json.loads(b))
        elif name == "report.html":
            stamp = re.compile(rb"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d)?(\+00:00| UTC)?")
            assert stamp.sub(b"", a) == stamp.sub(b"", b)
        else:
            assert a == b, name
