"""The `hpstudy` command: parse, look up, call. Bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # Ctrl-C: the study stopped with trials re-queued
EXIT_TERMINATED = 143  # SIGTERM (e.g. SLURM preemption): the same; requeue the job


class UsageError(Exception):
    """Bad input found by the CLI itself; printed as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    # argparse prints the whole usage block on error; one line that names the problem is clearer.
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_train_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, spelled like the field: the CLI cannot drift from the config."""
    from hpstudy.trainables.config import TrainConfig

    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.name == "model_args":
            parser.add_argument("--model-arg", dest="model_args", action="append", default=None,
                                metavar="KEY=VALUE", help="model builder keyword, repeatable "
                                "(e.g. --model-arg batch_norm=true); VALUE is JSON or a string")
        elif f.type in ("bool",):
            parser.add_argument(_flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=f"default: {default}")
        else:
            kind = {"int": int, "float": float, "int | None": int, "float | None": float}.get(str(f.type), str)
            parser.add_argument(_flag(f.name), dest=f.name, type=kind, default=None, metavar=f.name.upper(),
                                help=f"default: {default}")


def _config_from_args(args: argparse.Namespace):
    from hpstudy.trainables.config import ConfigError, TrainConfig

    values: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if f.name == "model_args":
            value = dict(_parse_key_value(item) for item in value)
        values[f.name] = value
    try:
        return TrainConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise UsageError(str(exc)) from None


def _parse_key_value(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise UsageError(f"--model-arg: expected KEY=VALUE (got {item!r})")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def _default_out(cfg) -> Path:
    return Path("runs") / f"{cfg.model}-{cfg.dataset}-{cfg.optimizer}-lr{cfg.lr:g}-bs{cfg.batch_size}-seed{cfg.seed}"


def _check_writable(out: Path) -> None:
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"out: cannot write to {parent} (permission denied or not a directory)")


def cmd_train(args: argparse.Namespace) -> int:
    from hpstudy.trainables import checkpoints
    from hpstudy.trainables.datasets import load_split
    from hpstudy.trainables.engine import check_config, train
    from hpstudy.trainables.loader import check_sizes
    from hpstudy.trainables.outputs import write_run_outputs
    from hpstudy.trainables.reporting import PrintReporter

    cfg = _config_from_args(args)
    check_config(cfg)
    out = Path(args.out) if args.out else _default_out(cfg)
    ckpt_dir = out / "checkpoints"
    if checkpoints.list_checkpoints(ckpt_dir) and not args.resume:
        raise UsageError(f"out: {out} already holds a run; pass --resume to continue it or choose another --out")
    _check_writable(out)
    # Missing data (offline) or a subset larger than the data is one line before anything is printed;
    # the splits are memoised, so train() does not read them again.
    train_split = load_split(cfg.dataset, True, cfg.data_dir, cfg.download, cfg.image_size)[1]
    test_split = load_split(cfg.dataset, False, cfg.data_dir, cfg.download, cfg.image_size)[1]
    check_sizes(cfg, len(train_split), len(test_split))
    print(f"hpstudy train: {cfg.model} on {cfg.dataset}, {cfg.optimizer} lr={cfg.lr:g} "
          f"batch_size={cfg.batch_size} epochs={cfg.epochs} -> {out}", flush=True)
    # Files appear only once the data has loaded and the first epoch ended: a rejected run writes nothing.
    result = train(cfg, PrintReporter(), checkpoint_dir=ckpt_dir, resume_from=ckpt_dir if args.resume else None)
    files = write_run_outputs(result, out)
    print("wrote " + ", ".join(str(p) for p in files), flush=True)
    return 0  # a run that diverged or stalled still ran as asked; its result says so


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers (got {text!r})") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one seed")
    return values


_terminated = False
_armed = False
_stop_requested = threading.Event()  # for run_study's watch on Ray's GCS (see stop_watch.py)


def _stop_gracefully(signum, frame) -> None:
    # SLURM preemption and `docker stop` send SIGTERM. Ray Tune stops a run gracefully on SIGINT (its
    # own handler while trials run), so SIGTERM becomes SIGINT: trials stop at their newest checkpoint
    # and are re-queued; the exit code (143) tells a batch script to requeue the job. Only the first
    # signal counts (SLURM may signal both the batch shell and the driver), and none acts during the
    # setup, where it would interrupt a database migration: it is acted on once the setup is done.
    global _terminated
    if _terminated:
        return
    _terminated = True
    _stop_requested.set()
    if _armed:
        _interrupt()


def _interrupt() -> None:
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):  # Tune's graceful stop, or Python's KeyboardInterrupt
        handler(signal.SIGINT, None)
    else:  # SIGINT ignored (a background job of a non-interactive shell)
        raise KeyboardInterrupt


def _arm() -> None:
    global _armed
    _armed = True
    if _terminated:
        _interrupt()


def _say_stopped(exc: BaseException) -> None:
    print(f"hpstudy: {exc}; run the same command to continue", file=sys.stderr, flush=True)


def _exit_stranded(exc: BaseException) -> None:
    # Called from run_study's watch thread once the driver's stop is done without Tune (SIGTERM reached
    # Ray's GCS too): the main thread stays blocked in Tune, so only os._exit ends the process.
    _say_stopped(exc)
    sys.stdout.flush()
    os._exit(EXIT_TERMINATED)


def cmd_run(args: argparse.Namespace) -> int:
    from hpstudy.studies.report import best_trial_summary, results_table
    from hpstudy.studies.ray_start import attach_to_cluster
    from hpstudy.studies.runner import OVERRIDABLE, RunSettings, StudyInterrupted, plan_run, run_study
    from hpstudy.studies.storage import shown

    overrides = {k: getattr(args, k) for k in OVERRIDABLE if getattr(args, k) is not None}
    settings = RunSettings(
        definition=args.definition, study_name=args.study_name, storage=args.storage, sampler=args.sampler,
        pruner=args.pruner, n_trials=args.n_trials, epochs=args.epochs, seeds=args.seeds, seed=args.seed,
        overrides=overrides, max_concurrent=args.max_concurrent, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, ray_address=args.ray_address,
        mlflow_tracking_uri=args.mlflow_tracking_uri, data_dir=args.data_dir, workdir=args.workdir)
    plan = plan_run(settings)
    # A cluster that refuses this driver is one line, before any other output.
    cluster = attach_to_cluster(settings.ray_address)
    for warning in plan.warnings:
        print(f"hpstudy: warning: {warning}", file=sys.stderr)
    print(f"hpstudy run: study {plan.study_name!r} ({plan.definition.name}: {plan.sampler} sampler, "
          f"{plan.pruner} pruner, {plan.target} trials, {plan.epochs} epoch{'s' if plan.epochs != 1 else ''}) in "
          f"{shown(settings.storage)}; "
          f"MLflow {shown(settings.mlflow_tracking_uri)}", flush=True)
    signal.signal(signal.SIGTERM, _stop_gracefully)
    try:
        study = run_study(plan, on_ready=_arm, cluster=cluster, stop_requested=_stop_requested,
                          on_stranded=_exit_stranded)
    except StudyInterrupted as exc:
        _say_stopped(exc)
        return EXIT_TERMINATED if _terminated else EXIT_INTERRUPTED
    print()
    print(results_table(study))
    print()
    print(best_trial_summary(study))
    return 0


def _load_study(storage: str, name: str):
    """An existing study, or one line saying there is none (never creates a storage or a study)."""
    import optuna

    from hpstudy.studies.runner import check_storage_url, existing_study
    from hpstudy.studies.storage import open_storage, shown

    check_storage_url(storage)
    if existing_study(storage, name)[1] is None:
        raise UsageError(f"study-name: no study {name!r} in {shown(storage)}")
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def cmd_report(args: argparse.Namespace) -> int:
    from hpstudy.studies.report import log_report_to_mlflow, write_report

    study = _load_study(args.storage, args.study_name)
    _check_writable(Path(args.out))
    files = write_report(study, Path(args.out))
    logged = log_report_to_mlflow(study, files)
    print(f"wrote {files[0]}" + (" and logged it to the study's MLflow run" if logged else ""))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from hpstudy.studies.report import comparison_table

    if len(args.study_name) < 2:
        raise UsageError(f"study-name: compare needs two or more studies (got {args.study_name[0]!r}; "
                         f"`hpstudy report` shows one)")
    studies = [_load_study(args.storage, name) for name in args.study_name]
    try:
        print(comparison_table(studies, args.by))
    except ValueError as exc:
        raise UsageError(f"by: {exc}") from None
    return 0


def cmd_studies(args: argparse.Namespace) -> int:
    from hpstudy.search_spaces import SPACES, grid_size
    from hpstudy.studies.builtin import STUDIES

    for name, d in STUDIES.items():
        space = SPACES[d.space]
        size = f"{grid_size(space.grid)}-point grid" if space.grid and d.sampler == "grid" else f"{d.n_trials} trials"
        model = d.base.get("model", "(searched)")
        print(f"{name:24s} {d.base.get('dataset', '?'):12s} {str(model):14s} {d.sampler:6s} {d.pruner:9s} "
              f"{size:16s} {d.base['epochs']:>3} epochs  {d.description}")
    return 0


def cmd_spaces(args: argparse.Namespace) -> int:
    from hpstudy.search_spaces import SPACES

    for name, space in SPACES.items():
        print(f"{name:22s} {space.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hpstudy", description="Hyperparameter studies for classic deep-learning experiments.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train = sub.add_parser("train", help="one training run, the way a classic train.py runs",
                           description="Train one model once; prints one line per epoch and writes "
                                       "history.csv, curves.png, per_class.csv and checkpoints to --out.")
    _add_train_config_flags(train)
    train.add_argument("--out", help="output directory (default: runs/<model>-<dataset>-<optimizer>-...)")
    train.add_argument("--resume", action="store_true", help="continue from the newest good checkpoint in --out")
    train.set_defaults(func=cmd_train)

    run = sub.add_parser("run", help="run (or continue) a study: Optuna decides, Ray Tune trains, MLflow logs",
                         description="Run a study definition (see `hpstudy studies`), or continue the study "
                                     "named by --study-name in --storage.")
    run.add_argument("definition", nargs="?", help="a study definition; optional when continuing a study")
    run.add_argument("--study-name", help="Optuna study name (default: the definition's name)")
    run.add_argument("--storage", default=os.environ.get("HPSTUDY_STORAGE", "sqlite:///hpstudy.db"),
                     help="Optuna storage: sqlite:///FILE (one driver), postgresql+psycopg://USER:PASSWORD@HOST/DB "
                          "or journal:///FILE (several drivers); env HPSTUDY_STORAGE (default: sqlite:///hpstudy.db)")
    run.add_argument("--sampler", help="grid | tpe | random | qmc (default: the definition's)")
    run.add_argument("--pruner", help="none | median | percentile | hyperband | sha | wilcoxon")
    run.add_argument("--n-trials", type=int, help="trials to end with (grid: at most its size)")
    run.add_argument("--epochs", type=int, help="epochs per trial (default: the definition's)")
    run.add_argument("--seeds", type=_int_list, help="repeat every configuration per seed, e.g. 0,1,2")
    run.add_argument("--seed", type=int, help="the sampler's seed (default: 0; a study keeps its own)")
    run.add_argument("--train-size", type=int, help="train on a subset (e.g. 800) to run on a laptop")
    run.add_argument("--val-size", type=int)
    run.add_argument("--test-size", type=int)
    run.add_argument("--checks-per-epoch", type=int,
                     help="reports per epoch (default: 1); more let the pruner stop a hopeless trial inside "
                          "its first epoch (from 30%% into it on); each check scores 512 validation images")
    run.add_argument("--checkpoint-every-s", type=float,
                     help="write an epoch's checkpoint only once this many seconds have passed since the last "
                          "(the last epoch's always; default: 30; 0: every epoch): a resume repeats at most this much")
    run.add_argument("--max-concurrent", type=int, help="trials at once (default: as resources allow)")
    run.add_argument("--cpus-per-trial", type=float, default=1.0, help="also the torch threads (default: 1)")
    run.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractions pack trials on a GPU")
    run.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS"), help="an existing Ray cluster")
    run.add_argument("--mlflow-tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    run.add_argument("--data-dir", help="pre-staged datasets (default: ~/.cache/hpstudy/data)")
    run.add_argument("--workdir", default="hpstudy-runs", help="Ray results and checkpoints, MLflow artifacts")
    run.set_defaults(func=cmd_run)

    report = sub.add_parser("report", help="Markdown report with figures for a study, logged to MLflow too")
    report.add_argument("--study-name", required=True)
    report.add_argument("--storage", default=os.environ.get("HPSTUDY_STORAGE", "sqlite:///hpstudy.db"))
    report.add_argument("--out", required=True, help="directory for report.md and its PNG figures")
    report.set_defaults(func=cmd_report)

    compare = sub.add_parser("compare", help="several studies side by side, e.g. optimizer x model")
    compare.add_argument("--study-name", required=True, nargs="+", action="extend",
                         help="two or more studies (--study-name A B, or the flag repeated)")
    compare.add_argument("--storage", default=os.environ.get("HPSTUDY_STORAGE", "sqlite:///hpstudy.db"))
    compare.add_argument("--by", default="optimizer", help="the searched parameter for the rows (default: %(default)s)")
    compare.set_defaults(func=cmd_compare)

    sub.add_parser("studies", help="list the built-in study definitions").set_defaults(func=cmd_studies)
    sub.add_parser("spaces", help="list the search spaces").set_defaults(func=cmd_spaces)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    from hpstudy.trainables.config import ConfigError, DataNotFoundError

    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (UsageError, ConfigError, DataNotFoundError) as exc:
        print(f"hpstudy: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("hpstudy: interrupted", file=sys.stderr)
        return EXIT_TERMINATED if _terminated else EXIT_INTERRUPTED


def command() -> None:
    """The `hpstudy` executable: main(), then an exit without the interpreter's teardown.

    By the time main() returns, every result is on disk (Optuna and MLflow committed, checkpoints in
    Tune's storage, Ray stopped) and printed; the teardown that followed, finalizing torch's, Ray's, MLflow's
    and SQLAlchemy's objects one by one, took 2.2-2.4 s more before the shell got its prompt back
    (`hpstudy run lenet5-sgd-lr-bs --epochs 5`, two runs). The atexit handlers still run (logging's
    flush, Ray's and MLflow's own, temporary folders), then the standard streams are flushed. Should a
    thread that the interpreter would wait for still run (an executor left open), the exit is the
    ordinary one."""
    code = main()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()  # what the interpreter runs at exit, before its teardown
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`hpstudy ... | head`), a closed stream
            pass
    os._exit(code)


if __name__ == "__main__":
    command()
