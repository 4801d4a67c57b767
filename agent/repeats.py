"""Process-level repeats: one job measured in N fresh worker processes, combined into one document.

On real boards the variation between processes (where the allocator put the arena, which core the
scheduler chose, the frequency at start) dominates the variation within one, so ``repeat`` N runs the
job in N workers. The combined document keeps each process's summary under ``processes``; its
headline ``timing.p50_ms`` is the median of the process medians, ``timing.between_process_cv`` the
coefficient of variation of those medians (n-1), and it is flagged ``noisy`` when that is at or above
the noise threshold. mean/std/min/max/count are exact over every sample; p90/p99 come from the pooled
``samples_us`` (whole microseconds). Standard library only.
"""

from __future__ import annotations

import copy
import math
import statistics

from agent import measure, schema


def process_summary(doc: dict, index: int) -> dict:
    """One worker's line in ``processes``."""
    timing, memory = doc.get("timing") or {}, doc.get("memory") or {}
    mean, std = timing.get("mean_ms"), timing.get("std_ms")
    return {
        "index": index,
        "pid": (doc.get("worker") or {}).get("pid"),
        "status": doc.get("status"),
        "error_kind": (doc.get("error") or {}).get("kind"),
        "count": timing.get("count"),
        "p50_ms": timing.get("p50_ms"),
        "mean_ms": mean,
        "std_ms": std,
        "cv": std / mean if mean and std is not None else None,
        "min_ms": timing.get("min_ms"),
        "init_ms": timing.get("init_ms"),
        "peak_rss_kb": memory.get("peak_rss_kb"),
        "model_peak_kb": memory.get("model_peak_kb"),
        "canary_ratio": (doc.get("canary") or {}).get("ratio"),
        "mj_per_inference": (doc.get("energy") or {}).get("mj_per_inference"),
        "flags": list(doc.get("flags") or []),
    }


def combine(docs: list[dict]) -> dict:
    """One document for the worker documents of one job (in run order). Raises ValueError on no docs."""
    if not docs:
        raise ValueError("no process documents to combine")
    summaries = [process_summary(d, i) for i, d in enumerate(docs)]
    ok = [d for d in docs if d.get("status") == "ok"]
    out = copy.deepcopy(ok[0] if ok else docs[0])
    out["processes"] = summaries
    out["timing"]["process_count"] = len(docs)
    if len(docs) == 1:
        return out
    failed = [d for d in docs if d.get("status") != "ok"]
    if failed:  # the job is as good as its worst process; the good ones stay visible in `processes`
        out["status"], out["error"] = failed[0]["status"], copy.deepcopy(failed[0]["error"])
    for doc in docs:
        for flag in doc.get("flags") or []:
            schema.add_flag(out, flag)
        for warning in doc.get("warnings") or []:
            if warning not in out["warnings"]:
                out["warnings"].append(warning)
    out["state"] = {"before": (docs[0].get("state") or {}).get("before"),
                    "after": (docs[-1].get("state") or {}).get("after")}
    out["env"]["temp_c_after"] = (docs[-1].get("env") or {}).get("temp_c_after")
    if ok:
        _timing(out, ok)
        _memory_energy_canary(out, ok)
    return out


def _timing(out: dict, ok: list) -> None:
    timings = [d["timing"] for d in ok]
    counts = [t["count"] for t in timings]
    total = sum(counts)
    mean = math.fsum(t["mean_ms"] * n for t, n in zip(timings, counts)) / total
    within = math.fsum((n - 1) * t["std_ms"] ** 2 + n * (t["mean_ms"] - mean) ** 2 for t, n in zip(timings, counts))
    pooled = sorted(s for t in timings for s in t["samples_us"])
    p50s = [t["p50_ms"] for t in timings]
    cv = statistics.stdev(p50s) / statistics.mean(p50s) if len(p50s) > 1 and statistics.mean(p50s) > 0 else None
    std = math.sqrt(within / (total - 1)) if total > 1 else 0.0
    out["timing"].update(
        count=total, mean_ms=mean, std_ms=std, min_ms=min(t["min_ms"] for t in timings),
        max_ms=max(t["max_ms"] for t in timings), p50_ms=statistics.median(p50s),
        p90_ms=measure.percentile(pooled, 90) / 1000.0, p99_ms=measure.percentile(pooled, 99) / 1000.0,
        init_ms=statistics.median(t["init_ms"] for t in timings),
        first_inference_ms=statistics.median(t["first_inference_ms"] for t in timings),
        samples_us=[s for t in timings for s in t["samples_us"]],
        stop_reason=measure.STOP_CAP if any(t["stop_reason"] == measure.STOP_CAP for t in timings)
        else measure.STOP_RUNS,
        between_process_cv=cv,
        noisy=bool(any(t["noisy"] for t in timings) or (cv is not None and cv >= measure.NOISE_THRESHOLD)))
    if cv is not None and cv >= measure.NOISE_THRESHOLD:
        schema.add_flag(out, schema.FLAG_NOISY)
        out["warnings"].append(f"noisy between processes: the p50s of {len(p50s)} workers vary by {cv:.0%} "
                               f"(>= {measure.NOISE_THRESHOLD:.0%}); pin the CPUs (--cpus), fix the governor, "
                               "or raise --repeat")


def _memory_energy_canary(out: dict, ok: list) -> None:
    for key in ("peak_rss_kb", "model_peak_kb"):
        values = [d["memory"][key] for d in ok if d["memory"].get(key) is not None]
        out["memory"][key] = max(values) if values else None
    energies = [d["energy"] for d in ok if (d.get("energy") or {}).get("mj_per_inference") is not None]
    if energies:
        out["energy"] = copy.deepcopy(energies[0])
        out["energy"]["mj_per_inference"] = statistics.median(e["mj_per_inference"] for e in energies)
        out["energy"]["idle_mw"] = statistics.median(e["idle_mw"] for e in energies)
        out["energy"]["active_mw"] = statistics.median(e["active_mw"] for e in energies)
    canaries = [d["canary"] for d in ok if (d.get("canary") or {}).get("ratio") is not None]
    if canaries:
        out["canary"] = copy.deepcopy(max(canaries, key=lambda c: c["ratio"]))
