"""Device names, workdirs and model file names with spaces and shell metacharacters work over real SSH
and inject nothing."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from controller.cli import main
from tests.fixtures_fleet import write_inventory

# An injected command would run in the login shell's cwd (home) or the controller's cwd.
CANARIES = [Path.home() / "edgebench-INJECTED", Path.cwd() / "edgebench-INJECTED"]
FAST = ["--runs", "3", "--warmup", "1", "--min-seconds", "0", "--warmup-min-seconds", "0", "--no-eval"]

NAME = st.text(
    alphabet=st.sampled_from(list("ab Z9 ;$()`'\"|&<>*?~!#{}[]\\=é日-_.,") + [" "]),
    min_size=1, max_size=16,
).filter(lambda s: s.strip() and not s.startswith(".") and "\\" not in s)  # "\\": refused by design


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAME)
@example(name="$(touch edgebench-INJECTED); `touch edgebench-INJECTED` ' \" ;")
def test_metacharacters_in_device_workdir_and_model_names(ssh_fleet, test_models, tmp_path_factory, name):
    for canary in CANARIES:
        canary.unlink(missing_ok=True)
    root = tmp_path_factory.mktemp("names")
    model = root / f"{name}.tflite"
    shutil.copyfile(test_models["float32"], model)
    workdir = root / f"work {name}"
    entry = dict(ssh_fleet.entries[3], name=name, workdir=str(workdir))
    inventory = write_inventory(root / "devices.yaml", [entry])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", str(model), "--devices", str(inventory), "--out", str(root / "out"), *FAST])
    doc = json.loads(out.getvalue()) if out.getvalue().startswith("{") else None
    assert doc is None  # the table, not JSON, was printed
    assert code == 0, out.getvalue()
    run_dir = Path(out.getvalue().split("run folder: ")[1].strip())
    info = json.loads((run_dir / "run.json").read_text())
    assert list(info["devices"]) == [name] and info["devices"][name]["state"] == "done"
    (result_file,) = (run_dir / "results" / name).glob("*.json")
    result = json.loads(result_file.read_text())
    assert result["status"] == "ok" and result["job"]["meta"]["model_name"] == name
    assert result["job"]["meta"]["device"] == name
    assert (workdir / "models").is_dir() and (workdir / "lock").exists()
    assert not any(canary.exists() for canary in CANARIES)
