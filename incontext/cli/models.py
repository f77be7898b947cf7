"""``incontext models``: the registered models, which one is the default, what each holds."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models", help="list the registered models and which one is the default",
        description="List the models that --model accepts by name: family, input size, "
                    "parameters, shipped weights, and which is the default. Details and "
                    "measured figures: MODEL_CARD.md.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


_MARKS = {"default": " *", "default text": " †"}


def _weights_text(info: dict) -> str:
    return "path=" if info["weights"] is None else f"{info['weights_bytes'] / 1e6:.1f} MB"


def _features_text(info: dict) -> str:
    widths = info["widths"]
    if len(set(widths)) == 1:
        return f"{info['family']} {len(widths)}×{widths[0]}"
    return f"{info['family']} {widths[0]}–{widths[-1]}"


def run(args: argparse.Namespace) -> int:
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from incontext.models.registry import available_models, model_info

    infos = [model_info(name) for name in available_models()]
    if args.json:
        print(json.dumps(infos, indent=2))
        return 0
    table = Table(title="Registered models: --model NAME, load_model(NAME)",
                  box=box.SIMPLE_HEAD, show_edge=False,
                  padding=(0, 1), pad_edge=False,
                  caption="* default   † default for --text   path=: bring the weights file")
    for column in ("name", "features", "input", "params", "file"):
        table.add_column(column, no_wrap=True, justify="right" if column == "params" else "left")
    for info in infos:
        table.add_row(info["name"] + _MARKS.get(info["role"], ""), _features_text(info),
                      f"{info['resolution']} px", f"{info['parameters'] / 1e6:.2f} M",
                      _weights_text(info))
    console = Console()
    console.print(table)
    for info in infos:
        console.print(f"[bold]{escape(info['name'])}[/]: {escape(info['description'])}",
                      highlight=False)
    return 0
