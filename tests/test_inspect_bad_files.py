"""The controller's model reader (``inspect``, the run preflight, convert) on paths that are not readable
regular files and on models whose names are not valid UTF-8 (issue 11, defects 3 and 8, controller side):
an InputError / exit 2 naming the file and what it is, at once."""

from __future__ import annotations

import os
import threading

import pytest

from controller.cli import main
from controller.errors import ExitCode, InputError
from controller.model.reader import read_model
from tests.test_agent_bad_files import corrupt_name


def test_a_tensor_name_that_is_not_utf8_is_refused_by_the_reader_and_inspect(tmp_path, test_models, capsys):
    """Before: inspect printed the name with a replacement character and exited 0, so the preflight let the
    model through and the agent then failed with 'internal'."""
    bad = corrupt_name(test_models["float32"], b"image", tmp_path / "badname.tflite")
    with pytest.raises(InputError, match="not valid UTF-8"):
        read_model(bad)
    assert main(["inspect", str(bad), "--json"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert str(bad) in err and "not valid UTF-8" in err


@pytest.mark.parametrize("kind,words", [("fifo", "is a FIFO (named pipe), not a regular file"),
                                        ("dev_zero", "is a character device, not a regular file"),
                                        ("loop", "is a symlink loop")])
def test_a_fifo_a_device_or_a_loop_is_refused_at_once(tmp_path, kind, words):
    """Before: a FIFO blocked read_model forever and /dev/zero read until memory ran out."""
    path = {"fifo": tmp_path / "p.tflite", "dev_zero": "/dev/zero", "loop": tmp_path / "l.tflite"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "loop":
        path.symlink_to(path)
    outcome: list = []
    reader = threading.Thread(target=lambda: outcome.append(_error_of(path)), daemon=True)
    reader.start()
    reader.join(timeout=20)
    assert outcome, f"read_model({path}) did not return within 20 s"
    assert f"{path} {words}" in outcome[0]


def _error_of(path) -> str:
    try:
        read_model(path)
    except InputError as exc:
        return str(exc)
    return "no error"
