"""Property tests: every numeric option of every command refuses NaN, infinity, negative and huge values
as a usage error (exit 2) naming the option, before any work starts (issue 11, defect 4 as a class).

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
