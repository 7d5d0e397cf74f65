"""The incremental and maintenance commands through the CLI: --dry-run, re-runs, rebuild."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from helpers import run_cli


def test_dry_run_rerun_and_rebuild(tmp_path: Path, photo_corpus: Path, tiny_local_dir: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(photo_corpus, corpus)
    flags = ["--root", str(tmp_path / "root")]
    model = ["--model", f"local-dir:{tiny_local_dir}"]

    code, stdout, stderr = run_cli("index", str(corpus), "-c", "p", *model, "--dry-run", "--json", *flags)
    assert code == 0, stderr
    plan = json.loads(stdout)
    assert plan["dry_run"] and plan["plan"]["new"] == 8 and plan["embedded"] == 0
    assert not (tmp_path / "root" / "state.json").exists()

    code, stdout, stderr = run_cli("index", str(corpus), "-c", "p", *model, "--json", *flags)
    assert code == 0, stderr
    assert json.loads(stdout)["embedded"] == 8

    (corpus / "rocket.bmp").unlink()
    code, stdout, stderr = run_cli("index", str(corpus), "-c", "p", "--dry-run", *flags)
    assert code == 0, stderr
    assert "deleted=1" in stderr and "unchanged=7" in stderr

    code, stdout, stderr = run_cli("index", str(corpus), "-c", "p", "--json", *flags)
    report = json.loads(stdout)
    assert (report["plan"]["deleted"], report["embedded"], report["points_deleted"]) == (1, 0, 1)

    code, stdout, _ = run_cli("info", "-c", "p", *flags)
    assert "last run" in stdout and "deleted=1" in stdout
    points = json.loads(run_cli("info", "-c", "p", "--json", *flags)[1])["collections"][0]["points"]

    code, _, stderr = run_cli("rebuild", "-c", "p", *flags)
    assert code == 0, stderr
    assert f"{points} points" in stderr
    assert json.loads(run_cli("info", "-c", "p", "--json", *flags)[1])["collections"][0]["points"] == points


def test_maintenance_errors_are_one_line(tmp_path: Path) -> None:
    flags = ["--root", str(tmp_path / "root")]
    for args in (["rebuild", "-c", "nope"], ["versions", "-c", "nope"], ["migrate", "-c", "nope", "--model", "ViT-B-32"]):
        code, stdout, stderr = run_cli(*args, *flags)
        assert code != 0
        assert "no collection 'nope'" in stderr and "Traceback" not in stderr + stdout
