"""200 mutated or truncated copies of valid models through the agent (`agent batch`) and the agent daemon:
no agent death, and every job ends as a document with a clear, documented error kind — never `internal`
(an agent bug) or `worker_failed` (a worker that died without saying why). Seeded, so a failure names
a reproducible file; bounded (runs=1, a 5 s deadline per job)."""

from __future__ import annotations

import json
import random
import subprocess

import pytest

from tests.fixtures_daemon import REPO, read_json

SEED = 20261130
COPIES = 200
SOURCES = ("float32", "int8_io", "two_outputs", "dynamic_conv", "int_inputs", "fp16")
CLEAR_KINDS = {"not_a_model", "runtime_error", "unsupported_op", "unresolved_op", "flex_op", "dynamic_shape",
               "timeout", "signal"}
FAST = {"runs": 1, "min_seconds": 0, "warmup": 0, "warmup_min_seconds": 0, "max_seconds": 2, "timeout": 5}


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One seeded corruption of ``data``: cut short, bits flipped, a span of random or zero bytes."""
    data = bytearray(data)
    how = rng.choice(["truncate", "flip", "random_span", "zero_span"])
    if how == "truncate":
        return bytes(data[:rng.randrange(0, len(data))]), how
    if how == "flip":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data), how
    start = rng.randrange(len(data))
    length = min(rng.randint(1, 256), len(data) - start)
    data[start:start + length] = (bytes(rng.randrange(256) for _ in range(length)) if how == "random_span"
                                  else bytes(length))
    return bytes(data), how


@pytest.fixture(scope="module")
def mutants(test_models, tmp_path_factory) -> list:
    rng = random.Random(SEED)
    folder = tmp_path_factory.mktemp("mutants")
    sources = {name: test_models[name].read_bytes() for name in SOURCES}
    jobs = []
    for i in range(COPIES):
        name = rng.choice(SOURCES)
        data, how = mutate(sources[name], rng)
        path = folder / f"m{i:03d}-{name}-{how}.tflite"
        path.write_bytes(data)
        jobs.append({"model": str(path), "id": path.stem, **FAST})
    return jobs


def assert_clear(docs: dict, jobs: list) -> None:
    assert sorted(docs) == sorted(j["id"] for j in jobs)  # one document per job, none lost or doubled
    unclear = {job_id: doc["error"] for job_id, doc in docs.items()
               if doc["status"] != "ok" and (doc["error"]["kind"] not in CLEAR_KINDS or not doc["error"]["message"])}
    assert unclear == {}
    assert any(doc["status"] == "ok" for doc in docs.values())  # some mutants still load: the test runs them
    assert sum(doc["status"] != "ok" for doc in docs.values()) > len(docs) / 2


@pytest.mark.slow
def test_mutated_models_through_agent_batch_give_clear_errors(mutants, agent_venv_python, tmp_path):
    jobs = mutants[0::2]  # half through `agent batch`, half through the daemon: < 60 s together
    jobs_file = tmp_path / "jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    proc = subprocess.run([str(agent_venv_python), "-m", "agent", "batch", str(jobs_file), "--out",
                           str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 1, proc.stderr  # some jobs failed, the agent did not
    done = [json.loads(line) for line in proc.stdout.splitlines() if '"done"' in line]
    assert len(done) == len(jobs)
    assert_clear({p.stem: read_json(p) for p in (tmp_path / "out").glob("*.json")}, jobs)


@pytest.mark.slow
def test_mutated_models_through_the_daemon_give_clear_errors(mutants, agent_venv_python, tmp_path, agent_daemon):
    jobs = mutants[1::2]
    daemon = agent_daemon(tmp_path, python=str(agent_venv_python))
    assert len(daemon.submit(jobs)["accepted"]) == len(jobs)
    events = daemon.watch([j["id"] for j in jobs], timeout=300)
    status = daemon.status()
    assert status["daemon"]["pid"] == daemon.proc.pid and daemon.proc.poll() is None  # alive, same process
    assert status["finished"] == len(jobs) and status["queued"] == []
    assert_clear({e["id"]: read_json(e["file"]) for e in events}, jobs)
