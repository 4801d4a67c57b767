"""Property tests: every numeric option of every command (the agent's run/batch and job files; the
controller's run, convert, devices) refuses NaN, infinity, negative and huge values as a usage error
(exit 2) naming the option, before any work starts (issue 11, defect 4 as a class).

The commands run in this process (``main(argv)``): a usage error is decided before a worker, a device or
a converter is touched, so each example costs milliseconds.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import cli as agent_cli
from agent.errors import ExitCode as AgentExit
from agent.errors import UsageError
from agent.job import MAX_SECONDS, MAX_THREADS, JobSpec
from controller import cli as controller_cli
from controller.errors import ExitCode

EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

BAD_FLOATS = st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, -1.0, -1e-9, 1e300, MAX_SECONDS * 2]),
                       st.floats(max_value=-1e-12), st.floats(min_value=MAX_SECONDS * 1.001))
BAD_INTS_BELOW = st.integers(max_value=-1)


def float_text(value: float) -> str:
    return repr(value) if math.isfinite(value) else str(value)  # "nan", "inf", "-inf" as a user types them


AGENT_RUN_SECONDS = ["--timeout", "--min-seconds", "--max-seconds", "--warmup-min-seconds"]


@given(option=st.sampled_from(AGENT_RUN_SECONDS), value=BAD_FLOATS)
@EXAMPLES
def test_agent_run_refuses_a_bad_duration(test_models, capsys, option, value):
    code = agent_cli.main(["run", str(test_models["float32"]), f"{option}={float_text(value)}"])
    err = capsys.readouterr().err
    assert code == AgentExit.USAGE, err
    assert option.lstrip("-").replace("-", "_") in err and "Traceback" not in err


@given(option=st.sampled_from(["--threads", "--runs", "--warmup", "--seed"]),
       value=st.one_of(BAD_INTS_BELOW, st.integers(min_value=2**32)))
@EXAMPLES
def test_agent_run_refuses_a_bad_count(test_models, capsys, option, value):
    code = agent_cli.main(["run", str(test_models["float32"]), f"{option}={value}"])
    err = capsys.readouterr().err
    assert code == AgentExit.USAGE, err
    assert option.lstrip("-") in err


@pytest.mark.parametrize("threads", [MAX_THREADS + 1, 100_000])
def test_agent_thread_counts_are_bounded(test_models, capsys, threads):
    """--threads 100000 segfaulted the runtime and was reported as 're-convert the model'."""
    assert agent_cli.main(["run", str(test_models["float32"]), "--threads", str(threads)]) == AgentExit.USAGE
    assert f"threads must be between 1 and {MAX_THREADS}" in capsys.readouterr().err


@given(option=st.sampled_from(["--lock-timeout", "--cooldown"]), value=BAD_FLOATS)
@EXAMPLES
def test_agent_batch_refuses_a_bad_duration(tmp_path_factory, capsys, option, value):
    folder = tmp_path_factory.mktemp("batch")
    (folder / "jobs.json").write_text("[]")
    code = agent_cli.main(["batch", str(folder / "jobs.json"), "--out", str(folder / "out"),
                           f"{option}={float_text(value)}"])
    assert code == AgentExit.USAGE
    assert option in capsys.readouterr().err
    assert not (folder / "out").exists()  # refused before anything was created


@given(name=st.sampled_from(["warmup_min_seconds", "min_seconds", "max_seconds", "timeout"]),
       value=st.one_of(BAD_FLOATS, st.text(max_size=3), st.booleans(), st.none()))
@EXAMPLES
def test_a_job_file_setting_that_is_not_a_finite_duration_is_refused(name, value):
    """Job files are JSON, which Python reads with NaN / Infinity allowed."""
    with pytest.raises(UsageError, match=name):
        JobSpec.from_dict({"model": "m.tflite", name: value})


@given(name=st.sampled_from(["threads", "runs", "warmup", "seed"]),
       value=st.one_of(st.floats(), st.text(max_size=3), st.booleans(), BAD_INTS_BELOW,
                       st.integers(min_value=2**32)))
@EXAMPLES
def test_a_job_file_count_that_is_not_a_whole_number_in_range_is_refused(name, value):
    with pytest.raises(UsageError, match=name):
        JobSpec.from_dict({"model": "m.tflite", name: value})


@given(threads=st.integers(1, MAX_THREADS), seconds=st.floats(0, MAX_SECONDS), seed=st.integers(0, 2**32 - 1))
@EXAMPLES
def test_every_value_inside_the_bounds_is_accepted(threads, seconds, seed):
    """The other half of the rule: the bounds refuse nothing a user may mean."""
    JobSpec(model="m", threads=threads, min_seconds=seconds, max_seconds=seconds, seed=seed,
            timeout=max(seconds, 1e-3)).validate()


# ---- the controller's commands -----------------------------------------------------------------------

RUN_SECONDS = ["--min-seconds", "--warmup-min-seconds", "--max-seconds", "--job-timeout", "--lock-timeout"]
RUN_COUNTS = ["--runs", "--warmup", "--seed", "--parallel", "--threads"]


@pytest.fixture(scope="module")
def local_fleet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fleet")
    (folder / "devices.yaml").write_text(f"devices:\n  - name: here\n    transport: local\n    workdir: {folder}/w\n")
    return folder / "devices.yaml"


def controller_usage_error(capsys, argv: list[str]) -> str:
    try:
        code = controller_cli.main(argv)
    except SystemExit as exc:  # argparse's own type errors exit 2 from parse_args
        code = exc.code
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE, (argv, code, err)
    assert "Traceback" not in err
    return err


@given(option=st.sampled_from(RUN_SECONDS), value=BAD_FLOATS)
@EXAMPLES
def test_run_refuses_a_bad_duration_naming_the_option(test_models, local_fleet, tmp_path_factory, capsys, option,
                                                      value):
    """Before: --min-seconds nan failed the device with an agent traceback; --job-timeout nan was a
    controller traceback."""
    out = tmp_path_factory.mktemp("out")
    err = controller_usage_error(capsys, ["run", str(test_models["float32"]), "--devices", str(local_fleet),
                                          "--out", str(out), f"{option}={float_text(value)}"])
    assert option in err
    assert not list(out.iterdir())  # refused before a run folder was made


@given(option=st.sampled_from(RUN_COUNTS), value=st.one_of(BAD_INTS_BELOW, st.integers(min_value=2**32)))
@EXAMPLES
def test_run_refuses_a_bad_count_naming_the_option(test_models, local_fleet, tmp_path_factory, capsys, option,
                                                   value):
    if option == "--seed" and value < 0 or option != "--seed":
        out = tmp_path_factory.mktemp("out")
        err = controller_usage_error(capsys, ["run", str(test_models["float32"]), "--devices", str(local_fleet),
                                              "--out", str(out), f"{option}={value}"])
        assert option in err or (option == "--threads" and "threads" in err)


@given(option=st.sampled_from(["--top1-drop", "--min-cosine"]),
       value=st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, -101.0, 101.0]), st.floats(min_value=101)))
@EXAMPLES
def test_drift_thresholds_are_finite_and_in_range_for_run_and_convert(test_models, local_fleet, tmp_path_factory,
                                                                      capsys, option, value):
    if option == "--min-cosine" and -1 <= value <= 1:
        return
    out = tmp_path_factory.mktemp("out")
    err = controller_usage_error(capsys, ["run", str(test_models["float32"]), "--devices", str(local_fleet),
                                          "--out", str(out), f"{option}={float_text(value)}"])
    assert option in err
    err = controller_usage_error(capsys, ["convert", str(test_models["float32"]), "--out", str(out / "c"),
                                          "--variants", "fp32", f"{option}={float_text(value)}"])
    assert option in err and not (out / "c").exists()


@given(value=BAD_FLOATS)
@EXAMPLES
def test_devices_check_timeout_is_bounded(local_fleet, capsys, value):
    err = controller_usage_error(capsys, ["devices", "--devices", str(local_fleet), "--check",
                                          f"--timeout={float_text(value)}"])
    assert "--timeout" in err


@given(option=st.sampled_from(["--calibration-samples", "--seed"]),
       value=st.one_of(BAD_INTS_BELOW, st.integers(min_value=2**32)))
@EXAMPLES
def test_convert_counts_are_bounded(test_models, tmp_path_factory, capsys, option, value):
    out = tmp_path_factory.mktemp("c") / "o"
    err = controller_usage_error(capsys, ["convert", str(test_models["float32"]), "--out", str(out),
                                          "--variants", "fp32", f"{option}={value}"])
    assert option in err and not out.exists()
