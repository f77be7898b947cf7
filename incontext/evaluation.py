"""Score predicted label maps against ground truth files: Dice, IoU, HD95, ASSD per label.

What ``incontext evaluate`` runs. Predictions and ground truth are matched by file name
stem: a prediction ``case.png`` / ``case.nii.gz`` (as ``incontext segment`` writes them)
pairs with a ground truth ``case``, ``case_0000`` or ``case`` + ``_mask`` / ``_label`` /
``_seg`` / ``_gt`` of any supported format. Where one case has both a NIfTI and a PNG
prediction (``segment`` writes both for a 2D NIfTI query) the NIfTI is used. Overlay and
uncertainty previews (``*_overlay.png``, ``*_uncertainty.*``) are not predictions.

Metrics are :func:`incontext.metrics.mask_scores` per label value, on the whole image or
volume (a 3D Dice per volume, not a mean over slices), with distances in mm where the
ground truth is NIfTI (its voxel sizes) and in pixels otherwise.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from incontext.io import ImageReadError, file_kind, load_image
from incontext.io.files import case_name
from incontext.io.supports import as_label_map, label_names
from incontext.metrics import mask_scores, summarize

METRICS = ("dice", "iou", "hd95", "assd")
PREVIEW_SUFFIXES = ("_overlay", "_uncertainty")


class EvaluationError(ValueError):
    """Predictions and ground truth cannot be scored; the message names the file."""


@dataclass(frozen=True)
class ScoredPair:
    prediction: Path
    truth: Path


@dataclass
class FileScores:
    """One case: per label value, the four metrics and whether each mask was empty."""

    case: str
    prediction: Path
    truth: Path
    shape: tuple[int, ...]
    units: str  # "mm" (NIfTI voxel sizes) or "px"
    scores: dict[int, dict[str, float]] = field(default_factory=dict)
    empty: dict[int, tuple[bool, bool]] = field(default_factory=dict)  # (prediction, truth)


@dataclass
class Evaluation:
    """The matched pairs, their scores, the labels scored, and the files without a partner."""

    pairs: list[ScoredPair]
    files: list[FileScores] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    unmatched_predictions: list[Path] = field(default_factory=list)
    unmatched_truths: list[Path] = field(default_factory=list)

    def summary(self) -> dict[int, dict[str, dict[str, float | int]]]:
        """label -> metric -> :func:`incontext.metrics.summarize` over the cases."""
        return {v: {m: summarize([f.scores[v][m] for f in self.files]) for m in METRICS}
                for v in self.labels}


def _files(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise EvaluationError(f"{what} {folder}: not a folder")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and file_kind(p) is not None)


def _one_per_case(files: dict[str, list[Path]], what: str, folder: Path,
                  cases: set[str] | None = None) -> dict[str, Path]:
    """case -> its file; EvaluationError naming the files where a case (of ``cases``, default
    all) has several. A NIfTI beside 2D files of the same case wins (module docstring)."""
    chosen = {}
    for case, paths in files.items():
        nifti = [p for p in paths if file_kind(p) == "nifti"]
        candidates = nifti or paths
        if len(candidates) > 1 and (cases is None or case in cases):
            raise EvaluationError(f"{what} {folder}: case {case!r} has several files, "
                                  f"{candidates[0].name} and {candidates[1].name}; keep one "
                                  "(or move the other out of the folder)")
        chosen[case] = candidates[0]
    return chosen


def match_files(predictions: str | os.PathLike, truths: str | os.PathLike) -> Evaluation:
    """Pair prediction files with ground-truth files by case name (module docstring)."""
    pred_dir, truth_dir = Path(predictions), Path(truths)
    preds: dict[str, list[Path]] = {}
    for p in _files(pred_dir, "--pred"):
        key = case_name(p)
        if not key.lower().endswith(PREVIEW_SUFFIXES):
            preds.setdefault(key, []).append(p)
    by_case = _one_per_case(preds, "--pred", pred_dir)
    truth_files: dict[str, list[Path]] = {}
    for t in _files(truth_dir, "--truth"):
        for key in label_names(case_name(t)):
            truth_files.setdefault(key, []).append(t)
    truth_by_case = _one_per_case(truth_files, "--truth", truth_dir, set(by_case))
    pairs = {case: ScoredPair(p, truth_by_case[case]) for case, p in by_case.items()
             if case in truth_by_case}
    if not pairs:
        raise EvaluationError(f"--pred {pred_dir}: no prediction has a ground truth file of "
                              f"the same case name in --truth {truth_dir}")
    used = {pair.truth for pair in pairs.values()}
    return Evaluation(
        pairs=[pairs[c] for c in sorted(pairs)],
        unmatched_predictions=[p for c, p in by_case.items() if c not in pairs],
        unmatched_truths=sorted({t for t in truth_by_case.values() if t not in used}))


def _load_label_map(path: Path) -> tuple[np.ndarray, tuple[float, ...] | None, np.ndarray | None]:
    loaded = load_image(path, as_label=True)
    spacing = affine = None
    if loaded.nifti is not None:
        spacing = tuple(float(s) for s in loaded.nifti.spacing)
        affine = loaded.nifti.affine
    return as_label_map(loaded), spacing, affine


def score_pair(pair: ScoredPair, labels: Sequence[int] | None = None) -> FileScores:
    """Scores of one prediction against its ground truth, per label value (default: those
    in either file)."""
    pred, _, pred_affine = _load_label_map(pair.prediction)
    truth, spacing, truth_affine = _load_label_map(pair.truth)
    if pred.shape != truth.shape:
        raise EvaluationError(f"{pair.prediction}: shape {pred.shape} differs from its ground "
                              f"truth {pair.truth} {truth.shape}")
    if pred_affine is not None and truth_affine is not None and not np.allclose(
            pred_affine, truth_affine, atol=1e-3):
        warnings.warn(f"{pair.prediction}: affine differs from its ground truth "
                      f"{pair.truth.name}; scored voxel by voxel", stacklevel=2)
    if spacing is not None and len(spacing) != truth.ndim:
        spacing = None
    values = labels if labels is not None else sorted(
        {int(v) for v in np.unique(truth) if v} | {int(v) for v in np.unique(pred) if v})
    out = FileScores(case_name(pair.prediction), pair.prediction, pair.truth, truth.shape,
                     "mm" if spacing is not None else "px")
    for v in values:
        p, t = pred == v, truth == v
        out.scores[int(v)] = mask_scores(p, t, spacing)
        out.empty[int(v)] = (not p.any(), not t.any())
    return out


def _both_empty() -> dict[str, float]:
    return {"dice": 1.0, "iou": 1.0, "hd95": float("nan"), "assd": float("nan")}


def evaluate_folders(predictions: str | os.PathLike, truths: str | os.PathLike,
                     labels: Sequence[int] | None = None) -> Evaluation:
    """:func:`match_files` then :func:`score_matches`: the whole evaluation of two folders."""
    return score_matches(match_files(predictions, truths), labels)


def score_matches(result: Evaluation, labels: Sequence[int] | None = None,
                  progress: Callable[[], None] | None = None) -> Evaluation:
    """Score every matched pair of ``result`` (each file read once) and return it.
    ``labels`` default to every non-zero value in the ground truth files; a label a case
    has in neither file scores as empty against empty (Dice 1, HD95 / ASSD undefined).
    ``progress()`` is called after each case."""
    for pair in result.pairs:
        try:
            result.files.append(score_pair(pair, labels))
        except ImageReadError as exc:
            raise EvaluationError(str(exc)) from None
        if progress is not None:
            progress()
    if labels is None:
        labels = sorted({v for f in result.files for v, (_, t_empty) in f.empty.items()
                         if not t_empty})
        if not labels:
            raise EvaluationError("every ground truth file is empty (all 0): give --labels "
                                  "to score predictions against empty ground truth")
    result.labels = [int(v) for v in labels]
    predicted = {v for f in result.files for v, (p_empty, _) in f.empty.items() if not p_empty}
    never = [v for v in result.labels if v not in predicted]
    if never and predicted - set(result.labels):
        warnings.warn(f"label value(s) {never} occur in no prediction, which use "
                      f"{sorted(predicted - set(result.labels))} instead: do the label maps "
                      "use the same values (e.g. 1 vs 255)?", stacklevel=2)
    for f in result.files:  # the same labels for every case
        f.scores = {v: f.scores.get(v) or _both_empty() for v in result.labels}
        f.empty = {v: f.empty.get(v, (True, True)) for v in result.labels}
    return result
