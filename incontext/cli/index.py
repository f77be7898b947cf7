"""incontext index: build, inspect, validate, merge and subset task indexes.

    incontext index build RECIPE --source DIR --out FILE [--size 128] [--workers N]
                          [--slices midslice,maxslice|all] [--on-error skip|stop]
                          [--option key=value ...] [--options FILE.json|.toml]
    incontext index info FILE [--json]
    incontext index validate FILE
    incontext index merge OUT IN [IN ...] | --manifest OUT.json IN [IN ...]
    incontext index subset IN OUT [--splits train,val] [--max-slices val=24] [--drop-colour]
    incontext index recipes

build, merge and subset never replace an existing output unless given --overwrite.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers) -> None:
    """Add the ``index`` subcommand and its sub-subcommands."""
    parser = subparsers.add_parser("index",
                                   help="build, inspect, validate, merge, subset task indexes",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="index_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: (parser.print_help(), 0)[1])

    b = sub.add_parser("build", help="build an index from a recipe and a source folder")
    b.add_argument("recipe", help="recipe name (see `incontext index recipes`)")
    b.add_argument("--source", required=True, type=Path, help="input data folder")
    b.add_argument("--out", required=True, type=Path, help="output .h5 file")
    b.add_argument("--size", type=int, default=128,
                   help="side of stored square slices (default 128)")
    b.add_argument("--workers", type=int, default=1, help="processes (0 = all cores; default 1)")
    b.add_argument("--slices", default="midslice,maxslice",
                   help="3D slice choice: midslice,maxslice (default) or all")
    b.add_argument("--dtype", default="uint8", choices=("uint8", "float16"),
                   help="storage of the normalised images (default uint8: 4x smaller)")
    b.add_argument("--on-error", default="skip", choices=("skip", "stop"),
                   help="bad subject: log and skip it (default), or stop")
    b.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe option; VALUE is parsed as JSON when it can be")
    b.add_argument("--options", type=Path, help="recipe options from a .json or .toml file")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_overwrite(b)
    b.set_defaults(func=cmd_build)

    i = sub.add_parser("info", help="datasets, tasks and counts of an index")
    i.add_argument("file", nargs="+", help=".h5 index or manifest .json")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=cmd_info)

    v = sub.add_parser("validate", help="check schema and integrity (non-zero exit on problems)")
    v.add_argument("file", nargs="+", help=".h5 index or manifest .json")
    v.set_defaults(func=cmd_validate)

    m = sub.add_parser("merge", help="combine shards into one file, or write a manifest")
    m.add_argument("out", type=Path, help="output .h5 (or .json with --manifest)")
    m.add_argument("inputs", nargs="+", type=Path, help="input .h5 files or manifests")
    m.add_argument("--manifest", action="store_true",
                   help="write a JSON manifest listing the inputs instead of copying")
    _add_overwrite(m)
    m.set_defaults(func=cmd_merge)

    s = sub.add_parser("subset", help="a smaller copy: chosen splits, capped slices, no colour")
    s.add_argument("input", type=Path, help="input .h5 index")
    s.add_argument("out", type=Path, help="output .h5 index")
    s.add_argument("--splits", default="train,val,test",
                   help="splits kept, comma-separated (default train,val,test)")
    s.add_argument("--max-slices", action="append", default=[], metavar="SPLIT=K",
                   help="keep at most the first K slices of SPLIT per dataset; repeatable")
    s.add_argument("--drop-colour", action="store_true",
                   help="leave out the stored R, G, B (the grey images stay)")
    _add_overwrite(s)
    s.set_defaults(func=cmd_subset)

    r = sub.add_parser("recipes", help="list available recipes")
    r.set_defaults(func=cmd_recipes)


def _add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output file (default: refuse)")


def check_new_output(out: Path, overwrite: bool) -> None:
    """ValueError naming ``out`` when it is a folder, or an existing file without
    ``--overwrite`` (an index already written is never replaced by mistake)."""
    from incontext.data.index_format import check_output_path

    check_output_path(out)
    if out.exists() and not overwrite:
        raise ValueError(f"{out}: already exists; pass --overwrite to replace it, or choose "
                         "another output name")


def parse_options(pairs: list[str], path: Path | None) -> dict[str, Any]:
    """``--options FILE`` then ``--option k=v`` (JSON values, else strings)."""
    options: dict[str, Any] = {}
    if path is not None:
        try:
            text = path.read_text()
            if path.suffix.lower() == ".toml":
                import tomllib

                options.update(tomllib.loads(text))
            else:
                options.update(json.loads(text))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read recipe options ({exc})") from None
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option {pair!r}: expected KEY=VALUE")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def cmd_build(args: argparse.Namespace) -> int:
    from rich.console import Console

    from incontext.data.builder import BuildError, build_index

    console = Console(stderr=True)
    try:
        if args.out.exists() and not args.out.is_dir() and not args.overwrite:
            raise BuildError(f"{args.out}: already exists; pass --overwrite to replace it, "
                             "or choose another --out")
        report = build_index(
            args.recipe, args.source, args.out, size=args.size, workers=args.workers,
            slices=args.slices, on_error=args.on_error, dtype=args.dtype,
            recipe_options=parse_options(args.option, args.options),
            progress=not args.no_progress,
        )
    except BuildError as exc:
        console.print(f"[red]incontext index build: error:[/] {exc}", highlight=False)
        return 1
    for item in report.skipped:
        console.print(f"[yellow]skipped[/] {item['subject']}: {item['problem']}", highlight=False)
    console.print(
        f"[green]wrote[/] {report.out}: {report.dataset}, {report.built}/{report.subjects} "
        f"subjects, {report.slices} slices, {len(report.skipped)} skipped"
        + (f", {report.resumed} resumed" if report.resumed else "")
        + f" ({report.seconds:.1f} s, {report.slices_per_second:.0f} slices/s)", highlight=False)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from incontext.data.index_format import summarize

    summary = summarize(args.file)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    ds_table = Table(title="datasets")
    for col in ("dataset", "modality", "labels", "sub-datasets", "subjects train/val/test",
                "slices train/val/test", "size", "colour", "skipped"):
        ds_table.add_column(col, no_wrap=col == "dataset")
    for d in summary["datasets"]:
        ds_table.add_row(
            d["name"], f"{d['modality']} ({d['modality_name']})", ", ".join(d["label_names"]),
            ", ".join(s or "-" for s in d["sub_datasets"]),
            "/".join(str(d["subjects"][s]) for s in ("train", "val", "test")),
            "/".join(str(d["slices"][s]) for s in ("train", "val", "test")),
            "x".join(map(str, d["image_shape"])), "R, G, B" if d.get("colour") else "grey",
            str(d["skipped"]))
    console.print(ds_table)
    task_table = Table(title=f"{len(summary['tasks'])} tasks")
    for col in ("task", "modality", "plane", "label", "train", "val", "test", "non-empty"):
        task_table.add_column(col, no_wrap=col == "task")
    for t in summary["tasks"]:
        task_table.add_row(t["name"], t["modality"], t["plane"], t["label"],
                           *(str(t["counts"][s]) for s in ("train", "val", "test")),
                           str(sum(t["nonempty"].values())))
    console.print(task_table)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from incontext.data.index_format import validate

    problems = validate(args.file)
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return 1
    print(f"ok: {' '.join(args.file)}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from incontext.data.index_format import merge, resolve_paths, validate, write_manifest

    check_new_output(args.out, args.overwrite)
    if args.manifest:
        shards = resolve_paths(args.inputs)
        problems = validate(shards)
        if problems:
            for p in problems:
                print(f"problem: {p}", file=sys.stderr)
            return 1
        write_manifest(args.out, shards)
    else:
        merge(args.inputs, args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_subset(args: argparse.Namespace) -> int:
    from incontext.data.index_format import summarize
    from incontext.data.index_subset import subset_index

    caps = {}
    for pair in args.max_slices:
        split, sep, k = pair.partition("=")
        if not sep or not k.strip().isdigit():
            print(f"error: --max-slices {pair!r}: expected SPLIT=K, e.g. val=24", file=sys.stderr)
            return 2
        caps[split.strip()] = int(k)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    if not args.input.is_file():
        print(f"error: {args.input}: no such index file", file=sys.stderr)
        return 1
    try:
        if not (args.out.exists() and args.out.resolve() == args.input.resolve()):
            check_new_output(args.out, args.overwrite)  # (output = input: subset_index says)
        subset_index(args.input, args.out, splits=splits, max_slices=caps,
                     drop_colour=args.drop_colour)
    except ValueError as exc:  # IndexFormatError included
        print(f"error: {exc}", file=sys.stderr)
        return 1
    counts = [f"{d['name']} {'/'.join(str(d['slices'][s]) for s in ('train', 'val', 'test'))}"
              for d in summarize(args.out)["datasets"]]
    print(f"wrote {args.out} (slices train/val/test: {'; '.join(counts)})")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from data_recipes import available_recipes

    print("\n".join(available_recipes()))
    return 0
