"""``incontext benchmark``: the held-out task benchmark (model vs classic baselines).

Runs the protocol of docs/benchmark.md on one or more task indexes and writes
results.json, results.csv, report.md and PNG plots to ``--out``; a rerun with the same
``--out`` reuses finished rows.
"""

from __future__ import annotations

import argparse
import json
import os

from incontext.cli import (
    CLIError,
    add_device_argument,
    nearest_value,
    threshold_value,
    tiles_value,
)
from incontext.colour import COLOUR_CHOICES
from incontext.refine import REFINE_CHOICES
from incontext.support_flips import FLIP_CHOICES
from incontext.tta import TTA_CHOICES


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}"
                                         ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _method_value(text: str) -> tuple[str, str, object]:
    """``METHOD.KEY=VALUE`` (value parsed as JSON when possible)."""
    head, sep, raw = text.partition("=")
    method, dot, key = head.partition(".")
    if not sep or not dot or not method or not key:
        raise argparse.ArgumentTypeError(f"expected METHOD.KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return method.strip(), key.strip(), value


def _method_repeats(text: str) -> tuple[str, int]:
    method, sep, raw = text.partition("=")
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not sep or not method or value < 1:
        raise argparse.ArgumentTypeError(f"expected METHOD=REPEATS (>= 1), got {text!r}")
    return method.strip(), value


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``benchmark`` subcommand."""
    p = subparsers.add_parser(
        "benchmark", help="benchmark a model and classic baselines on held-out tasks",
        description="Few-shot benchmark on held-out task indexes: supports from each task's "
                    "train split, queries from its test split, the same seeded draws for "
                    "every method. See docs/benchmark.md.")
    p.add_argument("--index", action="append", required=True, metavar="HELDOUT.h5",
                   help="task index (.h5 or manifest .json); repeat for more")
    p.add_argument("--model", default=None, metavar="NAME_OR_PATH|none",
                   help="in-context model: registry name or .safetensors path; 'none' for "
                        "baselines only (default: the default model, or baselines only with "
                        "a note when none is shipped)")
    p.add_argument("--model-tiles", type=tiles_value, default=1, metavar="G|auto|autoG",
                   help="run the model on G x G overlapping tiles of a G-times larger image "
                        "(thin structures; (2G-1)^2 passes); auto = 1 or 2 per task, chosen "
                        "on the support set, auto3 = 1, 2 or 3; default 1 = whole image")
    p.add_argument("--model-threshold", type=threshold_value, default=0.5, metavar="T|auto",
                   help="foreground cut of the model's probabilities; auto = chosen per task "
                        "and draw by segmenting supports from the others (default 0.5)")
    p.add_argument("--model-tta", type=int, choices=TTA_CHOICES, default=1, metavar="N",
                   help="average the model over N flipped/rotated copies of each task "
                        "(1, 2, 4 or 8; N times the cost; default 1)")
    p.add_argument("--model-colour", choices=COLOUR_CHOICES, default="luma",
                   help="grey rendering of colour tasks (indexes built with R, G, B): luma "
                        "(default), red, green, blue, fisher, or auto = chosen per task and "
                        "draw by segmenting supports from the others")
    p.add_argument("--model-nearest", type=nearest_value, default=None, metavar="K",
                   help="run each query with only the K supports most like it (32 x 32 "
                        "thumbnail correlation); 'default' = as segment does by default "
                        "(16 with more than 16 supports); default here: all supports")
    p.add_argument("--model-hand-over", action="store_true",
                   help="per task and draw, let a supervised-unet trained on the supports "
                        "segment the queries when it beats the model on the supports "
                        "(4-fold cross-validation, by more than 0.03 Dice); trains 4-5 "
                        "U-Nets per prediction")
    p.add_argument("--model-support-flips", choices=FLIP_CHOICES, default="off",
                   help="add left-right, up-down and both-ways flipped copies of the supports: "
                        "off (default), on, auto = where they segment the supports better "
                        "(leave-one-out on up to 8 supports; one support: its own copies), "
                        "or default = as segment does "
                        "by default (auto with 1 to 4 supports, else off)")
    p.add_argument("--model-refine", choices=REFINE_CHOICES, default="off",
                   help="pass the model's probabilities through a small per-pixel head fitted "
                        "on the supports (model probability + local image filters): off "
                        "(default), on, auto = where it beats the model on the supports "
                        "(2-fold cross-validation), or default = as segment does by default")
    p.add_argument("--text-model", default=None, metavar="NAME_OR_PATH",
                   help="also benchmark a TextDriven model, prompted with each task's label "
                        "name, with the support examples, or both (see --text-modes)")
    p.add_argument("--text-modes", default="all", metavar="all|text,examples,both",
                   help="prompting modes of --text-model (default all three)")
    p.add_argument("--baselines", default="all", metavar="all|none|a,b",
                   help="baselines to run: supervised-unet, supervised-unet-rgb, threshold, "
                        "prototype, nearest-support, mean-label (default all)")
    p.add_argument("--baseline-option", action="append", type=_method_value, default=[],
                   metavar="METHOD.KEY=VALUE",
                   help="baseline setting, e.g. supervised-unet.steps=60; repeatable")
    p.add_argument("--support-sizes", type=_int_list, default=[1, 2, 4, 8, 16, 32, 64],
                   metavar="1,2,4,...", help="support sizes N (default 1,2,4,8,16,32,64)")
    p.add_argument("--ensembles", type=_int_list, default=[1, 5], metavar="1,5",
                   help="support-set ensemble sizes for the model (default 1,5)")
    p.add_argument("--repeats", type=int, default=5,
                   help="independent support draws per task and N (default 5)")
    p.add_argument("--method-repeats", action="append", type=_method_repeats, default=[],
                   metavar="METHOD=R", help="fewer/more draws for one method, e.g. "
                                            "supervised-unet=2; repeatable")
    p.add_argument("--queries-per-task", type=int, default=None, metavar="N",
                   help="at most N test queries per task, chosen with the seed (default all)")
    p.add_argument("--query-split", choices=("test", "val"), default="test",
                   help="where the queries come from (default test); val: choose settings "
                        "on a training pool without touching its test split")
    p.add_argument("--tasks", default=None, metavar="GLOB[,GLOB]",
                   help="only tasks matching these patterns (default all)")
    p.add_argument("--out", default="benchmark-results", metavar="DIR",
                   help="output folder; rerunning with it reuses finished rows "
                        "(default benchmark-results)")
    add_device_argument(p, what="the model runs and the U-Net baselines train")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the support draws and query caps (default 0)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, print the tables and the output paths."""
    from rich.console import Console

    from incontext.benchmark import run_benchmark
    from incontext.benchmark.report import print_tables

    for path in args.index:
        if not os.path.exists(path):
            raise CLIError(f"--index {path}: no such file")
    if args.repeats < 1:
        raise CLIError(f"--repeats must be >= 1, got {args.repeats}")
    if args.queries_per_task is not None and args.queries_per_task < 1:
        raise CLIError(f"--queries-per-task must be >= 1, got {args.queries_per_task}")
    settings: dict[str, dict[str, object]] = {}
    for method, key, value in args.baseline_option:
        settings.setdefault(method, {})[key] = value
    methods = []
    if args.text_model is not None:
        from incontext.benchmark.text_methods import text_prompt_methods
        from incontext.models.registry import REGISTRY

        if args.text_model not in REGISTRY and not os.path.exists(args.text_model):
            raise CLIError(f"--text-model {args.text_model}: no such file or registered model")
        methods = text_prompt_methods(args.text_model, args.text_modes)
    console = Console()
    results = run_benchmark(
        args.index if len(args.index) > 1 else args.index[0],
        model=args.model, baselines=args.baselines, baseline_settings=settings,
        support_sizes=args.support_sizes, ensembles=args.ensembles, repeats=args.repeats,
        method_repeats=dict(args.method_repeats), queries_per_task=args.queries_per_task,
        query_split=args.query_split,
        out_dir=args.out, seed=args.seed,
        tasks=[t for t in args.tasks.split(",") if t] if args.tasks else None,
        progress=not args.no_progress, plots=not args.no_plots, console=console,
        methods=methods, model_tiles=args.model_tiles,
        model_threshold=args.model_threshold, model_tta=args.model_tta,
        model_colour=args.model_colour, model_nearest=args.model_nearest,
        model_hand_over=args.model_hand_over, model_support_flips=args.model_support_flips,
        model_refine=args.model_refine,
        model_device=args.device, baseline_device=args.device)
    print_tables(results, console)
    console.print(f"wrote {args.out}/results.json, results.csv, report.md "
                  f"({results.computed_rows} rows computed, {results.cached_rows} reused, "
                  f"{results.seconds:.0f} s)")
    return 0


if __name__ == "__main__":  # python -m incontext.cli.benchmark ...
    import sys

    _parser = argparse.ArgumentParser(prog="incontext")
    _sub = _parser.add_subparsers(dest="command")
    register(_sub)
    _args = _parser.parse_args(["benchmark", *sys.argv[1:]])
    try:
        sys.exit(_args.func(_args))
    except (CLIError, FileNotFoundError, ValueError) as _exc:
        print(f"incontext benchmark: error: {_exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("incontext benchmark: interrupted", file=sys.stderr)
        sys.exit(130)
