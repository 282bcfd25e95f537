"""The `hpstudy` command: parse, look up, call. Bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

EXIT_USAGE = 2


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
    from hpstudy.trainables.engine import check_config, train
    from hpstudy.trainables.outputs import write_run_outputs
    from hpstudy.trainables.reporting import PrintReporter

    cfg = _config_from_args(args)
    check_config(cfg)
    out = Path(args.out) if args.out else _default_out(cfg)
    ckpt_dir = out / "checkpoints"
    if checkpoints.list_checkpoints(ckpt_dir) and not args.resume:
        raise UsageError(f"out: {out} already holds a run; pass --resume to continue it or choose another --out")
    _check_writable(out)
    print(f"hpstudy train: {cfg.model} on {cfg.dataset}, {cfg.optimizer} lr={cfg.lr:g} "
          f"batch_size={cfg.batch_size} epochs={cfg.epochs} -> {out}", flush=True)
    # Files appear only once the data has loaded and the first epoch ended: a rejected run writes nothing.
    result = train(cfg, PrintReporter(), checkpoint_dir=ckpt_dir, resume_from=ckpt_dir if args.resume else None)
    files = write_run_outputs(result, out)
    print("wrote " + ", ".join(str(p) for p in files), flush=True)
    return 0  # a run that diverged or stalled still ran as asked; its result says so


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    from hpstudy.trainables.config import ConfigError
    from hpstudy.trainables.datasets import DataNotFoundError

    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (UsageError, ConfigError, DataNotFoundError) as exc:
        print(f"hpstudy: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("hpstudy: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
