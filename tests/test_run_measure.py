"""``edgebench run`` with the board-measurement options: pinning, repeats, XNNPACK and batch sweeps,
external delegates, real inputs, flags in the table. Real agent, real models, this machine as the
device (transport local, the bare numpy + ai-edge-litert venv)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from controller.cli import main
from tests.fixtures_fleet import DEVICE_PYTHON, write_inventory
from tests.test_run import FAST, run_json  # the `family` fixture comes from conftest


def inventory(tmp_path: Path, **extra) -> Path:
    entry = {"name": "here", "transport": "local", "workdir": str(tmp_path / "work"), "python": DEVICE_PYTHON}
    entry.update(extra)
    return write_inventory(tmp_path / "devices.yaml", [entry])


def rows_of(doc: dict) -> dict:
    return {r["job_id"]: r for r in doc["results"]}


def test_pinned_repeated_xnnpack_sweep(family, tmp_path, capsys):
    models = [str(family / "convnet.fp32.tflite"), str(family / "convnet.int8.tflite")]
    argv = [*models, "--devices", str(inventory(tmp_path)), "--out", str(tmp_path / "out"), "--no-eval",
            "--cpus", "1", "--repeat", "2", "--xnnpack", "on,off", *FAST]
    code = main(["run", *argv])
    table = capsys.readouterr().out
    assert code in (0, 1), table
    run_dir = Path(table.split("run folder:")[1].split()[0])
    results = pd.read_parquet(run_dir / "results.parquet")
    assert sorted(results["job_id"]) == ["000-convnet-fp32-t1", "000-convnet-fp32-t1-noxnn",
                                         "001-convnet-int8-t1", "001-convnet-int8-t1-noxnn"]
    ok = results[results["status"] == "ok"]
    assert len(ok) == 4, results[["job_id", "status", "error"]]
    assert set(ok["affinity"]) == {"1"} and set(ok["process_count"]) == {2}
    assert ok["between_process_cv"].notna().all() and (ok["model_peak_kb"] > 0).all()
    by_id = ok.set_index("job_id")
    assert bool(by_id.loc["000-convnet-fp32-t1", "xnnpack"]) is True
    assert bool(by_id.loc["000-convnet-fp32-t1-noxnn", "xnnpack"]) is False
    assert by_id.loc["000-convnet-fp32-t1", "ops_delegated"] == 5
    assert by_id.loc["000-convnet-fp32-t1-noxnn", "ops_delegated"] == 0
    # each variant's speedup is against the fp32 job of the same XNNPACK setting
    fp32_off = by_id.loc["000-convnet-fp32-t1-noxnn", "p50_ms"]
    assert by_id.loc["001-convnet-int8-t1-noxnn", "speedup_vs_fp32"] == pytest.approx(
        fp32_off / by_id.loc["001-convnet-int8-t1-noxnn", "p50_ms"])
    # the table: the CPUs (pinned to part of the device) and the XNNPACK sweep are shown; flags next to ok
    assert "cpus" in table and "xnnpack" in table and "model MiB" in table
    for flags in ok["flags"]:
        if flags:
            assert f"ok ({flags.replace(',', ', ')})" in table


def test_a_flagged_ok_reads_differently_from_a_clean_ok(test_models, tmp_path, capsys):
    code = main(["run", str(test_models["bench_medium"]), "--devices", str(inventory(tmp_path)), "--out",
                 str(tmp_path / "out"), "--runs", "100000", "--min-seconds", "0", "--max-seconds", "0.05",
                 "--warmup-min-seconds", "0"])
    out = capsys.readouterr().out
    assert code == 0
    run_dir = Path(out.split("run folder:")[1].split()[0])
    row = pd.read_parquet(run_dir / "results.parquet").iloc[0]
    assert "partial" in row["flags"].split(",")
    assert "ok (" in out and "partial" in out


def test_device_cpus_batch_sweep_and_input_shapes(test_models, tmp_path):
    models = [str(test_models["float32"]), str(test_models["dynamic_batch"]), str(test_models["dynamic_length"])]
    code, doc = run_json(*models, "--devices", str(inventory(tmp_path, cpus="0")), "--out", str(tmp_path / "out"),
                         "--cpus", "1", "--batch-sizes", "1,4", "--input-shape", "seq=1,12,4", *FAST)
    rows = rows_of(doc)
    assert code == 0, [(r["job_id"], r["error"]) for r in rows.values()]
    # the batch sweep applies to the model with a dynamic batch only; --input-shape to the model with `seq`
    assert sorted(rows) == ["000-float32---t1", "001-dynamic_batch---t1-b1", "001-dynamic_batch---t1-b4",
                            "002-dynamic_length---t1"]
    assert rows["001-dynamic_batch---t1-b4"]["batch"] == 4 and rows["000-float32---t1"]["batch"] is None
    assert all(r["affinity"] == "0" for r in rows.values())  # the device's cpus: key wins over --cpus
    results = Path(doc["run_dir"]) / "results" / "here"

    def shape(job_id: str) -> list:
        return json.loads((results / f"{job_id}.json").read_text())["model"]["inputs"][0]["shape"]

    assert shape("001-dynamic_batch---t1-b4") == [4, 16] and shape("001-dynamic_batch---t1-b1") == [1, 16]
    assert shape("002-dynamic_length---t1") == [1, 12, 4]


def test_inputs_are_pushed_and_used(test_models, tmp_path):
    np.savez(tmp_path / "x.npz", x=np.full((3, 8, 8, 1), 0.5, np.float32))
    code, doc = run_json(str(test_models["float32"]), "--devices", str(inventory(tmp_path)), "--out",
                         str(tmp_path / "out"), "--inputs", str(tmp_path / "x.npz"), *FAST)
    assert code == 0
    job_id = doc["results"][0]["job_id"]
    used = json.loads((Path(doc["run_dir"]) / "results" / "here" / f"{job_id}.json").read_text())["inputs"]
    assert used["count"] == 3 and used["source"].startswith(str(tmp_path / "work" / "data"))


def test_a_missing_delegate_is_each_jobs_error_not_the_runs(family, tmp_path):
    code, doc = run_json(str(family / "convnet.fp32.tflite"), "--devices", str(inventory(tmp_path)),
                         "--out", str(tmp_path / "out"), "--no-eval", "--delegate", "/nonexistent/libnpu.so:a=1",
                         *FAST)
    assert code == 1 and doc["devices"]["here"]["state"] == "done"
    row = doc["results"][0]
    assert row["status"] == "error" and row["error_kind"] == "delegate_load"
    assert row["delegate"] == "/nonexistent/libnpu.so" and "does not exist on this device" in row["error"]


@pytest.mark.parametrize("args,needle", [
    (["--xnnpack", "maybe"], "--xnnpack takes on, off"),
    (["--batch-sizes", "0,2"], "--batch-sizes takes"),
    (["--cpus", "fast"], "--cpus 'fast'"),
    (["--inputs", "/nonexistent/x.npz"], "--inputs /nonexistent/x.npz does not exist"),
    (["--delegate", "/x/lib.so:novalue"], "is not key=value"),
    (["--repeat", "0"], "--repeat must be between 1 and 1000"),
    (["--run-delay", "-1"], "--run-delay must be between 0 and"),
    (["--input-shape", "seq=1,x"], "NAME=d1,d2"),
    (["--input-shape", "sequence=1,2"], "no model has such an input"),
])
def test_bad_measurement_options_exit_2_naming_the_option(test_models, tmp_path, capsys, args, needle):
    argv = ["run", str(test_models["float32"]), "--devices", str(inventory(tmp_path)), "--out",
            str(tmp_path / "out"), *args]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses a malformed value itself, with exit 2
        code = exc.code
    assert code == 2
    assert needle in capsys.readouterr().err


def test_devices_yaml_cpus_is_validated_naming_file_device_and_key(test_models, tmp_path, capsys):
    path = inventory(tmp_path, cpus="fastest")
    code = main(["run", str(test_models["float32"]), "--devices", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and str(path) in err and "'here'" in err and "'cpus'" in err


@pytest.mark.parametrize("value,expected", [("big", "big"), (0, "0"), ("0,2-3", "0,2-3"), ("all", "all")])
def test_devices_yaml_cpus_forms(tmp_path, value, expected):
    from controller.fleet.inventory import load

    assert load(str(inventory(tmp_path, cpus=value))).devices[0].cpus == expected


def test_an_ansible_host_sets_cpus_with_edgebench_cpus(tmp_path):
    from controller.errors import ConfigError
    from controller.fleet.ansible import load_ansible

    (tmp_path / "lab.ini").write_text("[rpi]\nrpi4-a ansible_host=10.0.0.21 edgebench_cpus=big\n")
    assert load_ansible(str(tmp_path / "lab.ini")).devices[0].cpus == "big"
    (tmp_path / "bad.ini").write_text("[rpi]\nrpi4-a ansible_host=10.0.0.21 edgebench_cpus=fast\n")
    with pytest.raises(ConfigError, match="'cpus' must be all, big, little or a CPU list"):
        load_ansible(str(tmp_path / "bad.ini"))
