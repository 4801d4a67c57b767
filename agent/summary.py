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
        f"status    {doc['status']}" + (f"  [{', '.join(doc['flags'])}]" if doc.get("flags") else ""),
    ]
    env, counted = doc.get("env") or {}, runtime.get("delegation")
    if env.get("affinity") is not None:
        lines.append(f"cpus      {env['affinity']} ({env.get('cluster')}), governor {env.get('governor')}, "
                     f"{env.get('freq_mhz')} MHz")
    if counted:
        lines.append(f"graph     {counted['ops_delegated']} of {counted['ops']} ops delegated, "
                     f"{counted['ops_on_cpu']} on the CPU {counted['cpu_ops'] or ''}".rstrip())
    if doc["status"] == "ok":
        processes = doc.get("processes") or []
        lines += [
            (f"latency   p50 {_ms(timing['p50_ms'])}  p90 {_ms(timing['p90_ms'])}  p99 {_ms(timing['p99_ms'])}  "
            f"mean {_ms(timing['mean_ms'])} +- {_ms(timing['std_ms'])}  "
            f"({timing['count']} runs, {timing['stop_reason']})"),
            (f"init      {_ms(timing['init_ms'])}, first inference {_ms(timing['first_inference_ms'])}, "
            f"warmup {timing['warmup_count']} runs"),
            (f"memory    rss before load {_mb(memory['rss_before_load_kb'])}, after init "
            f"{_mb(memory['rss_after_init_kb'])}, peak {_mb(memory['peak_rss_kb'])}, model peak "
            f"{_mb(memory.get('model_peak_kb'))}"),
        ]
        if len(processes) > 1:
            lines.append(f"processes {len(processes)}: p50s " + ", ".join(_ms(p["p50_ms"]) for p in processes)
                         + f"; between-process CV {timing['between_process_cv']:.1%}")
        energy = doc.get("energy") or {}
        if energy.get("mj_per_inference") is not None:
            lines.append(f"energy    {energy['mj_per_inference']:.3f} mJ/inference ({energy['source']}, idle "
                         f"{energy['idle_mw']:.0f} mW)")
        if doc.get("outputs_file"):
            lines.append(f"outputs   {doc['outputs_file']}")
    else:
        error = doc["error"] or {}
        lines.append(f"error     {error.get('kind')}: {error.get('message')}")
        tail = (error.get("stderr_tail") or "").strip().splitlines()[-5:]
        lines += [f"  stderr| {line}" for line in tail]
    lines += [f"warning   {w}" for w in doc.get("warnings", [])]
    return "\n".join(lines)
