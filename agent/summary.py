"""A result document as a few readable lines (``python -m agent run`` without ``--json``)."""

from __future__ import annotations

from pathlib import Path


def _mb(kb: object) -> str:
    return f"{kb / 1024:.1f} MB" if isinstance(kb, (int, float)) else "n/a"


def _ms(value: object) -> str:
    return f"{value:.3f} ms" if isinstance(value, (int, float)) else "n/a"


def job_summary(doc: dict) -> str:
    """Model, runtime, status, latency percentiles, init, memory and warnings of ``doc``."""
    model, runtime, timing, memory = doc["model"], doc["runtime"], doc["timing"], doc["memory"]
    delegates = runtime.get("delegates")
    lines = [
        (f"model     {Path(model['path']).name}  ({model.get('bytes')} bytes, sha256 "
        f"{(model.get('sha256') or '?')[:12]})"),
        (f"runtime   {runtime.get('name')} {runtime.get('version')}, {runtime.get('num_threads')} thread(s), "
        f"delegates: {', '.join(delegates) if delegates else 'none' if delegates is not None else 'unknown'}"),
        f"status    {doc['status']}",
    ]
    if doc["status"] == "ok":
        lines += [
            (f"latency   p50 {_ms(timing['p50_ms'])}  p90 {_ms(timing['p90_ms'])}  p99 {_ms(timing['p99_ms'])}  "
            f"mean {_ms(timing['mean_ms'])} +- {_ms(timing['std_ms'])}  "
            f"({timing['count']} runs, {timing['stop_reason']})"),
            (f"init      {_ms(timing['init_ms'])}, first inference {_ms(timing['first_inference_ms'])}, "
            f"warmup {timing['warmup_count']} runs"),
            (f"memory    rss before load {_mb(memory['rss_before_load_kb'])}, after init "
            f"{_mb(memory['rss_after_init_kb'])}, peak {_mb(memory['peak_rss_kb'])}"),
        ]
        if doc.get("outputs_file"):
            lines.append(f"outputs   {doc['outputs_file']}")
    else:
        error = doc["error"] or {}
        lines.append(f"error     {error.get('kind')}: {error.get('message')}")
        tail = (error.get("stderr_tail") or "").strip().splitlines()[-5:]
        lines += [f"  stderr| {line}" for line in tail]
    lines += [f"warning   {w}" for w in doc.get("warnings", [])]
    return "\n".join(lines)
