"""``edgebench nightly [MODELS...]``: the nightly job - run, compare with the last comparable nightly,
re-measure what looks changed, look for change points, write the report and regressions.json/.md."""

from __future__ import annotations

import argparse
from typing import Any

from controller.commands.compare import add_limit_arguments
from controller.commands.run import add_run_arguments
from controller.history.nightly_job import LOG_NAME


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "nightly",
        help="the nightly job: run, compare, confirm by re-measuring, report (exit 5 on a regression)",
        description="Run MODELS like `edgebench run` and mark the run as a nightly; compare it with the last "
        "comparable nightly; re-measure every suspected change in fresh workers after --cooldown and report only "
        "what shows again; look for change points over the nightly history; write the report, regressions.json "
        "and regressions.md into the run folder. Exit 5 on a confirmed regression, else the run's exit code. "
        "Runs without a terminal (cron, systemd): log lines to --log-file (and to stderr when it is not a "
        "terminal); one nightly at a time per reports folder (a lock the kernel frees when a nightly dies).",
    )
    # the models may also come from --config; --cooldown is the nightly's own (before re-measuring)
    add_run_arguments(p, models_nargs="*", job_cooldown=False)
    add_limit_arguments(p, accuracy=False)  # --top1-drop / --min-cosine are run options already
    p.add_argument("--config", metavar="NIGHTLY.yaml", help="options as YAML keys (models, devices, tag, threads, "
                   "runs, out, threshold, cooldown ...); the command line wins over the file")
    p.add_argument("--cooldown", type=float, default=60.0,
                   help="seconds to wait before re-measuring suspected changes (default 60)")
    p.add_argument("--no-remeasure", action="store_true", help="report suspected changes without re-measuring "
                   "(none counts as confirmed)")
    p.add_argument("--window", type=int, default=60, help="nightlies per series searched for change points (default 60)")
    p.add_argument("--log-file", metavar="FILE", help=f"append log lines here (default <out>/{LOG_NAME})")
    p.add_argument("--wait-lock", type=float, default=0.0, metavar="S",
                   help="wait this long for a running nightly to finish (default 0: exit 3 at once)")
    p.set_defaults(func=run, _parser=p)


def apply_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Fill ``args`` from ``--config``: a key counts only where the command line left the default (so the
    command line beats the file, the file beats the defaults). Raises ConfigError naming the file and key."""
    import yaml

    from controller.errors import ConfigError

    try:
        with open(args.config, encoding="utf-8") as fh:
            config = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise ConfigError(f"--config {args.config}: no such file") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--config {args.config}: not readable YAML ({exc})") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"--config {args.config}: expected a mapping of option names to values")
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config", "_parser", "func")}
    for raw_key, value in config.items():
        key = str(raw_key).replace("-", "_")
        action = actions.get(key)
        if action is None:
            raise ConfigError(f"--config {args.config}: unknown key {raw_key!r}; keys are the nightly's long "
                              f"options: {', '.join(sorted(actions))}")
        if getattr(args, key) != parser.get_default(key):
            continue  # given on the command line
        setattr(args, key, _config_value(args.config, raw_key, value, action))


def _config_value(path: str, key: str, value: Any, action: argparse.Action) -> Any:
    from controller.errors import ConfigError

    many = action.nargs in ("*", "+") or isinstance(action, argparse._AppendAction)
    if many:
        values = value if isinstance(value, list) else [value]
        return [str(v) for v in values]
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise ConfigError(f"--config {path}: {key} must be true or false, got {value!r}")
        return value
    if action.type is not None:
        try:
            text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
            return action.type(text)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            raise ConfigError(f"--config {path}: {key}: {exc}") from None
    return value


def run(args: argparse.Namespace) -> int:
    import logging
    import os

    from controller.commands.compare import limits_from
    from controller.errors import UsageError
    from controller.history.index import check_store_url
    from controller.history.nightly_job import log_to_file, nightly_lock

    if args.config:
        apply_config(args, args._parser)
    if not args.models:
        raise UsageError("nightly needs models: give MODEL arguments or `models:` in --config")
    check_store_url(args.store)  # a bad --store is a usage error before anything is measured, as in `run`
    limits = limits_from(args)
    if args.cooldown < 0 or args.window < 2:
        raise UsageError("--cooldown must be >= 0 and --window >= 2")
    os.makedirs(args.out, exist_ok=True)
    handler = log_to_file(args.log_file or os.path.join(args.out, LOG_NAME))
    try:
        with nightly_lock(args.out, args.wait_lock):
            return _nightly(args, limits)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _nightly(args: argparse.Namespace, limits) -> int:
    import logging

    from controller.commands.run import options_from
    from controller.commands.selection import selected_devices
    from controller.fleet.models import collect_models
    from controller.history.nightly_runs import open_history_index

    log = logging.getLogger("controller.nightly")
    inventory, devices = selected_devices(args)
    models = collect_models(args.models)
    options = options_from(args)
    log.info("nightly starting: %d model file(s) on %d device(s)", len(models), len(devices))
    store, result = _execute(devices, models, options, inventory.path)
    run_code = int(result.exit_code())
    log.info("nightly %s: run finished (exit %d) in %s", store.run_id, run_code, store.root)
    for name, status in result.failed.items():
        log.warning("device %s failed (%s): %s", name, status.kind, status.reason)
    index = open_history_index(args.out, getattr(args, "store", None))
    try:
        return _judge(args, limits, (devices, models, options), store, run_code, index)
    finally:
        if index is not None:
            index.close()


def _execute(devices, models, options, inventory_path: str):
    """The fleet run of ``edgebench run`` (run.json ``kind: nightly``) with a live board on a terminal,
    plain log lines otherwise."""
    from controller.console import console
    from controller.fleet.view import execute_with_board, log_progress

    live = console(stderr=True).is_terminal
    return execute_with_board(devices, models, options, inventory_path, live=live,
                              notify=None if live else log_progress("controller.nightly.progress"), kind="nightly")


def _judge(args: argparse.Namespace, limits, plan: tuple, store, run_code: int, index) -> int:
    import json
    import logging
    import os
    import sys

    from controller.errors import EdgebenchError, ExitCode
    from controller.fleet.store import load_run_info
    from controller.history import nightly
    from controller.history.nightly_job import remeasure_step, write_nightly_report
    from controller.history.nightly_runs import nightly_history, nightly_runs, utc

    log = logging.getLogger("controller.nightly")
    if index is not None:
        try:
            index.add_run(store.root, kind="nightly")
        except EdgebenchError as exc:  # the run folder is complete; `edgebench history --rebuild` adds it
            log.warning("nightly %s not added to the history index (%s); reading run folders", store.run_id, exc)
            index = None
    if run_code == ExitCode.NO_DEVICE:
        log.error("nightly %s: no device reachable; nothing to compare", store.run_id)
        return run_code
    created = utc(load_run_info(store.root)["created"])
    runs = nightly_runs(args.out, index)
    earlier = [r for r in runs if r.run_id != store.run_id and r.created <= created]  # nightlies never overlap
    remeasure = None if args.no_remeasure else remeasure_step(plan, store)
    outcome = nightly.evaluate(store.root, earlier, limits, remeasure, args.cooldown,
                               nightly_history(runs, index), window=args.window)
    code = int(ExitCode.REGRESSION) if outcome.confirmed_regressions else run_code
    paths = list(nightly.write_outcome(outcome, code))
    store.save_run_info(exit_code=code, nightly={"baseline": outcome.last_comparable,
                                                 "confirmed_regressions": len(outcome.confirmed_regressions),
                                                 "remeasure_dir": outcome.remeasure_dir})
    paths += write_nightly_report(store.root, outcome.last_comparable, args.out, getattr(args, "store", None))
    for f in outcome.findings:
        log.warning("%s %s %s %s/%s t%d: %s; re-measure: %s", "CONFIRMED" if f.confirmed else "not confirmed",
                    f.verdict, f.device, f.model, f.variant, f.threads, "; ".join(f.reasons), f.remeasure_note)
    log.info("nightly %s: exit %d; %s", store.run_id, code, ", ".join(paths))
    if args.json:
        sys.stdout.write(json.dumps({**outcome.to_dict(), "exit_code": code}, indent=2, default=str) + "\n")
        return code
    with open(paths[1], encoding="utf-8") as fh:
        sys.stdout.write(fh.read())
    for path in paths:
        print(f"wrote {path}")
    print(f"run folder: {os.path.abspath(store.root)}")
    return code
