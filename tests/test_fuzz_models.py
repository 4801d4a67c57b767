"""Mutation fuzz of models through ``inspect`` (the reader), the run preflight (compat) and the agent
(pre-check + worker): a corrupt model is always one of the documented outcomes — an InputError / a
document with a documented error kind — never ``internal``, a traceback, a hang (issue 11, "make the
class impossible"). Bounded: seeded mutations, a fixed count, a deadline per agent job."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agent.schema
from agent import modelfile
from agent.errors import JobFailed
from controller.cli import main
from controller.errors import InputError
from controller.model import compat
from controller.model.reader import read_model_bytes

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("float32", "int8_io", "two_outputs")
#: error.kind values documented in agent/schema.py (the comment block is the contract)
DOCUMENTED_KINDS = set(re.findall(r'^#\s+"(\w+)"', Path(agent.schema.__file__).read_text(), re.MULTILINE))


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to four random edits: flip a bit, set a byte to an edge value, cut the file, insert or delete."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        how = rng.choice(("flip", "byte", "cut", "insert", "delete"))
        at = rng.randrange(len(out)) if out else 0
        if how == "flip" and out:
            out[at] ^= 1 << rng.randrange(8)
        elif how == "byte" and out:
            out[at] = rng.choice((0x00, 0x7F, 0x80, 0xFF))
        elif how == "cut":
            del out[at:]
        elif how == "insert":
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif out:
            del out[at:at + rng.randint(1, 8)]
    return bytes(out)


def test_the_documented_kinds_are_read_from_the_schema():
    assert {"not_a_model", "missing_model", "internal", "signal", "timeout"} <= DOCUMENTED_KINDS


@given(source=st.sampled_from(SOURCES), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_reader_and_the_preflight_give_a_model_or_an_input_error(test_models, source, seed):
    data = mutate(test_models[source].read_bytes(), random.Random(seed))
    try:
        info = read_model_bytes(data, "mutant.tflite")
    except InputError:
        return
    for runtime, version in (("ai-edge-litert", "2.3.0"), ("tflite-runtime", "2.14.0")):
        verdict = compat.check_info(info, runtime, version)  # never raises for a readable model
        assert verdict.ok in (True, False)


@given(source=st.sampled_from(SOURCES), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_agent_precheck_gives_custom_ops_or_not_a_model(test_models, tmp_path_factory, source, seed):
    path = tmp_path_factory.mktemp("m") / "mutant.tflite"
    path.write_bytes(mutate(test_models[source].read_bytes(), random.Random(seed)))
    try:
        assert isinstance(modelfile.check(path), list)
    except JobFailed as exc:
        assert exc.kind == "not_a_model", exc


def test_inspect_exits_0_or_2_on_mutants(test_models, tmp_path, capsys):
    rng = random.Random(11)
    codes = []
    for i in range(40):
        path = tmp_path / f"m{i}.tflite"
        path.write_bytes(mutate(test_models[SOURCES[i % len(SOURCES)]].read_bytes(), rng))
        codes.append(main(["inspect", str(path), "--json"]))
        err = capsys.readouterr().err
        assert codes[-1] in (0, 2) and "Traceback" not in err and "internal" not in err, (i, err)
    assert 2 in codes  # the mutations do reach the error path


@pytest.mark.slow
def test_the_agent_never_reports_internal_on_mutants(test_models, tmp_path):
    """40 mutants in one real ``agent batch`` (a fresh worker each, 30 s deadline each)."""
    rng = random.Random(2026)
    jobs = []
    for i in range(40):
        path = tmp_path / f"m{i:02d}.tflite"
        path.write_bytes(mutate(test_models[SOURCES[i % len(SOURCES)]].read_bytes(), rng))
        jobs.append({"model": str(path), "id": f"m{i:02d}", "runs": 1, "min_seconds": 0, "warmup": 0,
                     "warmup_min_seconds": 0, "max_seconds": 5, "timeout": 30})
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    proc = subprocess.run([sys.executable, "-m", "agent", "batch", str(tmp_path / "jobs.json"), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=900, cwd=REPO,
                          check=False)
    assert proc.returncode in (0, 1), proc.stderr
    kinds = {}
    for job in jobs:
        doc = json.loads((tmp_path / "out" / f"{job['id']}.json").read_text())
        kind = (doc["error"] or {}).get("kind")
        kinds[job["id"]] = kind
        assert doc["status"] == "ok" or kind in DOCUMENTED_KINDS, (job["id"], doc["error"])
        assert kind != "internal", (job["id"], doc["error"])
    assert "not_a_model" in kinds.values()
