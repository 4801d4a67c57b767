"""The ARM rootfs cache (tests/arm_rootfs.py): keyed by every input of its recipe, found where
EDGEBENCH_ARM_CACHE says, and a warm cache builds nothing."""

from __future__ import annotations

import pytest

from tests import arm_rootfs


@pytest.mark.parametrize("field, value", [
    ("suite", "trixie"), ("include", ["python3"]), ("mirror", "http://mirror.example/debian"),
    ("wheels", ["tflite-runtime==2.13.0", "numpy==1.26.4"]), ("platforms", ["manylinux_2_17_aarch64"]),
    ("layout", 2),
])
def test_every_recipe_input_changes_the_cache_key(monkeypatch, field, value):
    before = arm_rootfs.recipe_key()
    monkeypatch.setitem(arm_rootfs.RECIPE, field, value)
    assert arm_rootfs.recipe_key() != before and len(arm_rootfs.recipe_key()) == 16


def test_a_warm_cache_is_returned_without_building(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("EDGEBENCH_ARM_CACHE", str(tmp_path))
    entry = arm_rootfs.cached()
    assert entry.folder == tmp_path / f"arm64-{arm_rootfs.recipe_key()}" and not entry.ready
    entry.folder.mkdir()
    (entry.folder / "done.json").write_text("{}")
    monkeypatch.setattr(arm_rootfs, "_build", lambda target: pytest.fail("a warm cache was rebuilt"))
    monkeypatch.setattr(arm_rootfs, "ensure_binfmt", lambda: None)  # (host state, not under test here)
    assert arm_rootfs.ensure_rootfs() == entry
    assert "cached:" in capsys.readouterr().out
