"""The measurement options of a job on a command line, written once: the agent's ``run`` and the
controller's ``run`` / ``nightly`` add them with this function, so their names, defaults (the
:class:`agent.job.JobSpec` field defaults) and help cannot drift apart. Stdlib ``argparse`` only.

What each side adds on its own: the agent's ``--threads`` / ``--timeout`` / ``--cooldown`` /
``--no-xnnpack``, the controller's thread and XNNPACK sweeps, ``--job-timeout`` and its ``--cooldown``.
"""

from __future__ import annotations

import argparse

from agent.job import JobSpec


def add_measurement_options(parser: argparse.ArgumentParser, cpus_note: str = "") -> None:
    """Add --runs, --warmup, --warmup-min-seconds, --min-seconds, --max-seconds, --seed, --repeat,
    --run-delay, --cpus, --delegate, --inputs and --input-shape (repeatable) to ``parser``, with the
    JobSpec defaults. ``cpus_note``: appended to --cpus's help (e.g. what overrides it)."""
    d = JobSpec(model="")
    parser.add_argument("--runs", type=int, default=d.runs, help=f"at least this many timed runs (default {d.runs})")
    parser.add_argument("--warmup", type=int, default=d.warmup,
                        help=f"at least this many warmup runs (default {d.warmup})")
    parser.add_argument("--warmup-min-seconds", type=float, default=d.warmup_min_seconds,
                        help=f"and warm up at least this long, seconds (default {d.warmup_min_seconds:g})")
    parser.add_argument("--min-seconds", type=float, default=d.min_seconds,
                        help=f"and time for at least this long, seconds (default {d.min_seconds:g})")
    parser.add_argument("--max-seconds", type=float, default=d.max_seconds,
                        help=f"cap of the warmup and timed runs, seconds (default {d.max_seconds:g})")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"seed of the random inputs (default {d.seed})")
    parser.add_argument("--repeat", type=int, default=d.repeat, help="measure in this many fresh worker "
                        f"processes; the p50 is the median of theirs (default {d.repeat})")
    parser.add_argument("--run-delay", type=float, default=d.run_delay,
                        help=f"pause between two timed inferences, seconds (default {d.run_delay:g})")
    parser.add_argument("--cpus", metavar="LIST|big|little|all", help="pin the measuring worker to these CPUs: "
                        "a list like 0,2-3 or a cluster (big / little from the device's cpu_capacity)"
                        f"{cpus_note} (default: no pinning)")
    parser.add_argument("--delegate", metavar="PATH.so[:K=V,...]", help="external delegate library (its path on "
                        "the device) with its options, loaded through the runtime's load_delegate")
    parser.add_argument("--inputs", metavar="FILE.npz", help="real input data (.npy/.npz; float data is "
                        "quantized for int8/uint8 inputs) (default: seeded random inputs)")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=d1,d2",
                        help="resize a dynamic input (repeatable)")
