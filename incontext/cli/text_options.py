"""``--text`` options of ``incontext segment`` (parser only; no heavy imports)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_text_arguments(parser: argparse.ArgumentParser, standalone: bool = False) -> None:
    """Add ``--text`` and its options to ``parser``.

    With ``standalone=True`` also add what ``segment`` normally provides (``--model``,
    ``--out``, ``--modality``, positional ``images``), e.g. for testing.
    """
    if standalone:
        parser.add_argument("images", nargs="+", type=Path, help="images to segment")
        parser.add_argument("--model", required=True, help="TextDriven weights (.safetensors)")
        parser.add_argument("--out", type=Path, required=True, help="output folder")
        parser.add_argument("--modality", default="other", choices=("ct", "mr", "other"),
                            help="intensity normalisation")
        parser.add_argument("--threshold", type=float, default=0.5)
    group = parser.add_argument_group("text prompts (TextDriven models)")
    group.add_argument("--text", action="append", metavar="NAME",
                       help="a class to segment by name; repeat for several classes "
                            "(label value i in the output mask = i-th --text). With support "
                            "examples too (--support/--support-dir/--support-index), a "
                            "hybrid model uses both; support label --labels[i] (default "
                            "i) marks the i-th class")
    group.add_argument("--modality-name", default=None,
                       help="words for the prompt 'A {modality} image of a {label}' "
                            "(e.g. 'chest X-ray'; default from --modality)")
    group.add_argument("--text-encoder", default=None,
                       help="override the model's text encoder (hashing, minilm, clip)")
    group.add_argument("--text-encoder-path", default=None,
                       help="local CLIP folder for --text-encoder clip (never downloaded)")
    group.add_argument("--embedding-cache", type=Path, default=None,
                       help="an .h5/.npz file caching prompt embeddings")
    group.add_argument("--save-probabilities", action="store_true",
                       help="also write per-class probabilities (.npy, float16)")
