"""``incontext train``: meta-train a model from a TOML config (single process or torchrun)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="meta-train an in-context model on task indexes and synthetic tasks",
        description=(
            "Meta-train an in-context segmentation model. Start a run with --config "
            "(and --index files, else synthetic tasks only); continue an interrupted run "
            "with --resume RUN_DIR. Multi-process: torchrun --nproc_per_node N -m incontext "
            "train ..."
        ),
    )
    parser.add_argument("--config", type=Path, metavar="CONFIG.toml",
                        help="training config (see configs/); not needed with --resume")
    parser.add_argument("--index", type=Path, action="append", default=[], metavar="FILE.h5",
                        help="task index to train on (repeatable; adds to data.indexes)")
    parser.add_argument("--out", type=Path, metavar="RUN_DIR",
                        help="run directory (default runs/<name>-<timestamp>)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--time-limit", type=_minutes, metavar="MINUTES",
                        help="stop after training this long in this session, saving the "
                             "last checkpoint (continue later with --resume)")
    parser.add_argument("--validate", nargs="+", metavar="MODEL",
                        help="train nothing: score these models (weights files, checkpoint "
                             "directories such as RUN/best, registered names) on the "
                             "validation episodes of --config, for model selection")
    parser.add_argument("--validate-json", type=Path, metavar="FILE.json",
                        help="with --validate: also write the scores (per dataset and task)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar or summary table")
    parser.set_defaults(func=run)


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of minutes: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 minutes, got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    from incontext.text.train import is_text_config, is_text_run

    progress = False if args.no_progress else None
    if args.validate is not None:
        return _validate(args)
    if args.validate_json is not None:
        raise ValueError("--validate-json needs --validate MODEL ...")
    if args.config is not None:
        from incontext.training.config import read_config_text

        read_config_text(args.config)  # a folder or binary file: say so before anything else
    text_resume = args.resume is not None and is_text_run(args.resume)
    text_config = args.config is not None and is_text_config(args.config)
    if (text_resume or text_config) and args.time_limit is not None:
        raise ValueError("--time-limit is for UniverSeg runs; a TextDriven run stops at "
                         "its [train] steps")
    if text_resume:
        # a TextDriven run directory: continue the partial-label trainer from its state
        from incontext.text.train import resume_run

        resume_run(args.resume, progress=progress)
        return 0
    if text_config:
        # TextDriven configs ([model] + [train]) go to the partial-label trainer
        from incontext.text.train import run_from_config

        run_from_config(args.config, index=[str(i) for i in args.index] or None, out=args.out,
                        progress=progress)
        return 0
    from incontext.training import train

    if args.resume is not None and args.out is not None and args.out != args.resume:
        raise ValueError("--out and --resume name different run directories; use one")
    if args.resume is None and args.config is None:
        raise ValueError("--config CONFIG.toml is required (or --resume RUN_DIR)")
    summary = train(args.config, indexes=args.index, run_dir=args.resume or args.out,
                    resume=args.resume is not None,
                    progress=False if args.no_progress else None,
                    time_limit_s=None if args.time_limit is None else args.time_limit * 60)
    return 130 if summary.interrupted else 0


def _validate(args: argparse.Namespace) -> int:
    from incontext.training.validate import print_validation, validate_weights, write_validation

    if args.config is None:
        raise ValueError("--validate needs --config CONFIG.toml (its validation episodes)")
    if args.resume is not None or args.out is not None or args.time_limit is not None:
        raise ValueError("--validate trains nothing: drop --resume, --out and --time-limit")
    if args.validate_json is not None:
        _check_json_output(args.validate_json)  # before the work, not after it
    results = validate_weights(args.config, args.validate, args.index,
                               progress=not args.no_progress)
    print_validation(results)
    if args.validate_json is not None:
        write_validation(results, args.validate_json)
    return 0


def _check_json_output(path: Path) -> None:
    """ValueError naming ``path`` when a file cannot be written there."""
    from incontext.atomic import check_output_folder

    if path.is_dir():
        raise ValueError(f"--validate-json {path}: is a folder; give a file name, e.g. "
                         f"{path / 'validation.json'}")
    check_output_folder(path.parent)


def main(argv: list[str] | None = None) -> int:
    """``python -m incontext.cli.train ...``: this subcommand alone
    (same as ``incontext train``)."""
    import sys

    parser = argparse.ArgumentParser(prog="incontext")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as exc:
        print(f"incontext train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("incontext train: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
