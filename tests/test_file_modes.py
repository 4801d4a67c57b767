"""One file-mode rule for every file edgebench writes: the user's umask (issue 11, weaker spots). Before:
under umask 077 the JSON files were forced to 0644 while the Parquet files were 0600."""

from __future__ import annotations

import os
import stat

import pytest

from controller.fleet.store import RunStore, atomic_write, creation_mode


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def modes(root) -> dict[str, int]:
    return {os.path.relpath(os.path.join(d, f), root): stat.S_IMODE(os.stat(os.path.join(d, f)).st_mode)
            for d, _, files in os.walk(root) for f in files}


@pytest.mark.parametrize("mask,expected", [(0o077, 0o600), (0o022, 0o644), (0o002, 0o664)])
def test_run_folder_json_and_parquet_files_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    assert creation_mode() == expected
    store = RunStore.create(str(tmp_path), {"devices": {}}, run_id="r1")
    store.save_result("dev", {"schema_version": 1, "status": "error", "job": {"id": "j1"},
                          "error": {"kind": "x", "message": "m"}})
    store.write_tables()
    found = modes(store.root)
    assert {"run.json", "results.parquet", "samples.parquet", os.path.join("results", "dev", "j1.json")} <= set(found)
    assert set(found.values()) == {expected}, found
    assert not [name for name in found if ".tmp" in name]


def test_an_explicit_mode_is_kept_for_a_file_that_had_one(tmp_path, umask):
    umask(0o077)
    atomic_write(str(tmp_path / "f"), b"x", mode=0o644)
    assert stat.S_IMODE(os.stat(tmp_path / "f").st_mode) == 0o644
