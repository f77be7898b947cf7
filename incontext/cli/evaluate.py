"""``incontext evaluate``: score predicted label maps against ground truth (Dice, IoU,
HD95, ASSD per label), e.g. ``incontext segment``'s output folder against held-back labels."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import warnings
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="score predicted label maps against ground truth (Dice, HD95, ...)",
        description="Score a folder of predicted label maps (PNG or NIfTI, e.g. from incontext "
                    "segment) against a folder of ground truth label maps, matched by case "
                    "name. Per label: Dice, IoU, HD95 and ASSD (MONAI's definitions; "
                    "docs/metrics.md), on whole images or volumes, distances in mm for "
                    "NIfTI and in pixels otherwise.")
    p.add_argument("--pred", required=True, metavar="DIR", help="folder of predictions")
    p.add_argument("--truth", required=True, metavar="DIR",
                   help="folder of ground truth label maps (e.g. labelsTs/ or labels/)")
    p.add_argument("--labels", metavar="1,2",
                   help="label values to score (default: every value in the ground truth)")
    p.add_argument("--csv", metavar="FILE.csv",
                   help="also write one row per case and label (default: none)")
    p.add_argument("--json", metavar="FILE.json",
                   help="also write the per-case scores and the summary (default: none)")
    p.add_argument("--per-case", action="store_true",
                   help="print every case, not only the summary per label")
    p.add_argument("--overwrite", action="store_true", help="replace existing --csv / --json")
    p.set_defaults(func=run)


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _rows(result) -> list[dict]:
    rows = []
    for f in result.files:
        for v in result.labels:
            row = {"case": f.case, "label": v, **f.scores[v], "units": f.units,
                   "prediction_empty": f.empty[v][0], "truth_empty": f.empty[v][1],
                   "prediction": str(f.prediction), "truth": str(f.truth)}
            rows.append(row)
    return rows


def _csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _summary_table(result, summary: dict, unit: str, title: str):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title))
    for column in ("label", "Dice", "± sd", "IoU", f"HD95 ({unit})", f"ASSD ({unit})",
                   "HD95 undefined"):
        table.add_column(column, justify="right")
    for v in result.labels:
        s = summary[v]
        table.add_row(str(v), _fmt(s["dice"]["mean"]), _fmt(s["dice"]["std"]),
                      _fmt(s["iou"]["mean"]), _fmt(s["hd95"]["mean"], 2),
                      _fmt(s["assd"]["mean"], 2), f"{s['hd95']['undefined']}")
    return table


def _case_table(result, unit: str):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="per case")
    for column in ("case", "label", "Dice", "IoU", f"HD95 ({unit})", f"ASSD ({unit})"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for f in result.files:
        for v in result.labels:
            sc = f.scores[v]
            table.add_row(escape(f.case), str(v), _fmt(sc["dice"]), _fmt(sc["iou"]),
                          _fmt(sc["hd95"], 2), _fmt(sc["assd"], 2))
    return table


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import Progress

    from incontext.atomic import atomic_write_text, check_output_folder
    from incontext.cli import CLIError
    from incontext.cli.segment_run import parse_labels
    from incontext.evaluation import match_files, score_matches
    from incontext.io.files import check_writable

    labels = parse_labels(args.labels)
    outputs = [Path(p) for p in (args.csv, args.json) if p]
    if len(outputs) == 2 and outputs[0].resolve() == outputs[1].resolve():
        raise CLIError(f"--csv and --json are the same file ({outputs[0]}); give two names")
    for path in outputs:  # before any work
        check_output_folder(path.parent if str(path.parent) else ".")
        check_writable(path, args.overwrite)
    console = Console()
    result = match_files(args.pred, args.truth)
    with warnings.catch_warnings(record=True) as caught, \
            Progress(console=Console(stderr=True), transient=True) as progress:
        warnings.simplefilter("always")
        task = progress.add_task("scoring", total=len(result.pairs))
        score_matches(result, labels, progress=lambda: progress.advance(task))
    for w in caught:
        console.print(f"warning: {escape(str(w.message))}", highlight=False)
    units = sorted({f.units for f in result.files})
    unit = units[0] if len(units) == 1 else "mm or px"
    summary = result.summary()
    if args.per_case:
        console.print(_case_table(result, unit))
    console.print(_summary_table(result, summary, unit,
                                 f"{len(result.files)} cases: {args.pred} vs {args.truth}"))
    console.print("HD95 / ASSD are undefined where the prediction or the ground truth is empty "
                  "(Dice carries that case); means are over the defined ones.", highlight=False)
    if result.unmatched_predictions:
        console.print(f"note: {len(result.unmatched_predictions)} prediction(s) without ground "
                      f"truth, not scored (e.g. {escape(result.unmatched_predictions[0].name)})",
                      highlight=False)
    if result.unmatched_truths:
        console.print(f"note: {len(result.unmatched_truths)} ground truth file(s) without a "
                      f"prediction, not scored (e.g. {escape(result.unmatched_truths[0].name)})",
                      highlight=False)
    rows = _rows(result)
    if args.csv:
        console.print(f"csv: {atomic_write_text(args.csv, _csv_text(rows))}")
    if args.json:
        data = {"pred": str(args.pred), "truth": str(args.truth), "labels": result.labels,
                "summary": {str(v): s for v, s in summary.items()}, "cases": rows,
                "unmatched_predictions": [str(p) for p in result.unmatched_predictions],
                "unmatched_truths": [str(p) for p in result.unmatched_truths]}
        text = json.dumps(_json_safe(data), indent=1) + "\n"
        console.print(f"json: {atomic_write_text(args.json, text)}")
    return 0


def _json_safe(value):
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value
