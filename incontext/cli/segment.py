"""``incontext segment``: label 2D images or 3D NIfTI volumes from a few labeled examples.

Supports come from ``--support IMG:LABEL`` pairs, a ``--support-dir`` (images/ + labels/,
or an nnU-Net dataset) or a task index (``--support-index INDEX.h5 --task NAME``).
Queries are a file, a folder or a glob. Outputs go to ``--out``: a label map per
query (PNG for 2D, NIfTI on the query's exact grid for NIfTI input), optionally
overlays and uncertainty maps. See docs/segment.md. This module only builds the
parser (so ``incontext --help`` stays fast); the work is in ``segment_run``.
"""

from __future__ import annotations

import argparse

from incontext.cli import (
    add_device_argument,
    nearest_value,
    positive_int,
    threshold_value,
    tiles_value,
)
from incontext.cli.text_options import add_text_arguments
from incontext.colour import COLOUR_CHOICES
from incontext.ct_windows import CT_WINDOWS
from incontext.refine import REFINE_CHOICES
from incontext.support_flips import FLIP_CHOICES
from incontext.tta import TTA_CHOICES


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``segment`` subcommand."""
    p = subparsers.add_parser(
        "segment", help="segment images or volumes from a few labeled examples",
        description="Segment 2D images or 3D NIfTI volumes in context: give a few labeled "
                    "examples (supports) and the files to label (queries); no training.")
    sup = p.add_argument_group("support set (one of them; with --text, optional)")
    src = sup.add_mutually_exclusive_group(required=False)
    src.add_argument("--support", action="append", metavar="IMG:LABEL",
                     help="a labeled example; repeat for more")
    src.add_argument("--support-dir", metavar="DIR",
                     help="folder with images/ and labels/ (or masks/) matched by name, or an "
                          "nnU-Net dataset (imagesTr/, labelsTr/)")
    src.add_argument("--support-index", metavar="INDEX.h5",
                     help="a task index built with incontext (use with --task)")
    sup.add_argument("--task", help="task name inside --support-index")
    sup.add_argument("--max-supports", type=int, metavar="N",
                     help="use only the first N pairs (sorted by name) from --support-dir "
                          "(default: all)")
    add_text_arguments(p)  # --text NAME: a TextDriven model segments named structures
    p.add_argument("--query", required=True, metavar="PATH",
                   help="an image or volume, a folder of them, or a glob pattern (quoted)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--labels", metavar="1,2",
                   help="label values to segment (default: all values in the supports)")
    p.add_argument("--ensemble", type=int, default=1, metavar="K",
                   help="average K predictions with random support subsets (default 1)")
    p.add_argument("--support-size", type=int, metavar="N",
                   help="supports per prediction (2D default: all, at most 64; 3D: 16 "
                        "slices per query slice)")
    p.add_argument("--tiles", type=tiles_value, default=None, metavar="G|auto|autoG",
                   help="run the model on G x G overlapping tiles of a G-times larger "
                        "image (3D: of every slice), for thin or small structures "
                        "((2G-1)^2 passes); auto = 1 or 2, whichever segments the supports "
                        "best, auto3 = 1, 2 or 3 (default: 2D auto when the support images "
                        "are at least twice the model's size, else 1; volumes 1)")
    p.add_argument("--tta", type=int, choices=TTA_CHOICES, default=1, metavar="N",
                   help="average over N flipped/rotated copies of the task (1, 2, 4 or 8; "
                        "N times the cost; default 1)")
    p.add_argument("--colour", choices=COLOUR_CHOICES, default=None,
                   help="2D colour images: the grey rendering the model sees; luma, red, "
                        "green, blue, fisher (the supports' foreground/background channel mix) "
                        "or auto = chosen per label by segmenting supports from the others "
                        "(default: auto; grey images and volumes are unaffected)")
    p.add_argument("--nearest", type=nearest_value, default=None, metavar="K",
                   help="2D: run each query with only the K supports most like it "
                        "(32 x 32 thumbnail correlation), chosen among all the supports "
                        "unless --support-size is given; off = all supports (at most 64 "
                        "per pass); default: 16 when there are more than 16 supports")
    p.add_argument("--support-flips", choices=FLIP_CHOICES, default=None,
                   help="2D: add left-right, up-down and both-ways flipped copies of the "
                        "supports; on, off, or auto = per label where they segment the "
                        "supports better (leave-one-out on up to 8 supports; one support: "
                        "its own flipped copies segmented from it) (default: auto "
                        "with 1 to 4 supports per pass, off with more, with --nearest and "
                        "for volumes)")
    p.add_argument("--refine", choices=REFINE_CHOICES, default=None,
                   help="2D: pass the model's probabilities through a small per-pixel head "
                        "fitted on the supports (each segmented from the others) with local "
                        "image filters, about a second per label; on, off, or auto = per "
                        "label where it beats the model on the supports (2-fold "
                        "cross-validation) (default: see docs/segment.md; off for volumes)")
    p.add_argument("--threshold", type=threshold_value, default=None, metavar="T|auto",
                   help="probability threshold for foreground; auto = chosen per label by "
                        "segmenting supports from the others (for volumes: whole support "
                        "volumes, as --check-supports) (default: auto for 2D images, 0.5 for "
                        "volumes)")
    p.add_argument("--hand-over", action="store_true",
                   help="2D: per label, also train a small U-Net on the supports and let it "
                        "segment the queries where it beats the model on the supports "
                        "(4-fold cross-validation, by more than 0.03 Dice); for thin "
                        "structures such as membranes or vessels; trains 4-5 U-Nets per "
                        "label (about a minute each on a CPU) (default: off, no training)")
    p.add_argument("--modality", choices=("ct", "mr", "other"), default="other",
                   help="intensity normalisation: CT window, MR percentile clipping, or "
                        "min-max (default other)")
    p.add_argument("--window", metavar="LO,HI",
                   help=f"intensity window, e.g. -160,240, or a CT preset: "
                        f"{', '.join(CT_WINDOWS)} (default: none; with --modality ct "
                        f"the 'default' preset)")
    p.add_argument("--axis", type=int, choices=(0, 1, 2),
                   help="3D: slicing axis (default: the axis the supports are densest in)")
    p.add_argument("--planes", type=int, choices=(1, 3), default=1,
                   help="3D: 3 = segment along all axes and average (tri-planar; default 1)")
    p.add_argument("--largest-component", action="store_true",
                   help="keep only the largest connected component of each label")
    p.add_argument("--fill-holes", action="store_true", help="fill holes inside each label")
    p.add_argument("--min-size", type=int, default=0, metavar="N",
                   help="remove components smaller than N pixels/voxels")
    p.add_argument("--overlays", action="store_true", help="also write overlay PNGs")
    p.add_argument("--uncertainty", action="store_true",
                   help="also write uncertainty maps (std over ensemble members and planes)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--check-supports", action="store_true",
                   help="volumes: first segment up to 4 support volumes, each from the others, "
                        "and report their Dice (an estimate for the queries; one volume run "
                        "each). 2D images always get this check (default: off for volumes)")
    p.add_argument("--report", metavar="FILE.json",
                   help="also write a JSON report: the options, what was chosen on the support "
                        "set per label with its Dice there, and every file written "
                        "(default: none)")
    p.add_argument("--model", metavar="NAME_OR_PATH",
                   help="registered model name or .safetensors file (default: the default model)")
    add_device_argument(p)
    p.add_argument("--seed", type=int, default=0,
                   help="random seed for support subsets (default 0)")
    p.add_argument("--batch-size", type=positive_int, default=None, metavar="B",
                   help="queries per forward pass (default: 1 on the CPU, 8 on a GPU)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``incontext segment`` with parsed arguments."""
    from incontext.cli.segment_run import run as run_segment

    return run_segment(args)
