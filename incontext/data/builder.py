"""Build an HDF5 task index from a recipe: parallel, deterministic, resumable, atomic.

Finished subjects are saved one file each in ``<out>.partial/`` (written atomically), so
an interrupted build continues where it stopped. The index itself is written to a
temporary file next to ``--out`` and renamed only when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from data_recipes import get_recipe
from data_recipes.base import DatasetInfo, RecipeError, SubjectRef
from incontext.atomic import OutputFolderError, check_output_folder
from incontext.data.index_format import (
    SCHEMA_VERSION,
    SPLITS,
    STR_DTYPE,
    json_attr,
    write_root_attrs,
)
from incontext.data.slicing import IMAGE_DTYPES, parse_slices, slice_subject
from incontext.preprocessing import MODALITIES, PreprocessingError

SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
WORK_SUFFIX = ".partial"


class BuildError(RuntimeError):
    """The build stopped (bad input with on_error="stop", no usable subjects, bad options)."""


@dataclass
class BuildReport:
    out: Path
    dataset: str
    subjects: int
    built: int
    skipped: list[dict] = field(default_factory=list)
    slices: int = 0
    resumed: int = 0
    seconds: float = 0.0

    @property
    def slices_per_second(self) -> float:
        return self.slices / self.seconds if self.seconds > 0 else float("nan")


# --------------------------------------------------------------------------- splits

def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that is the same in every process and Python version."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def assign_splits(refs: Sequence[SubjectRef], dataset: str,
                  fractions: Sequence[float] = SPLIT_FRACTIONS) -> list[int]:
    """Split code per subject (0 train, 1 val, 2 test), 60/20/20 by default.

    Within each sub-dataset, subjects (or their ``extra["split_group"]``, e.g. one
    examination) are ordered by a SHA-256 hash of their id and cut at the cumulative
    fractions, so proportions are exact even for small datasets and the assignment does not
    depend on listing order. ``extra["split"]`` ("train"/"val"/"test") forces a split.
    """
    codes = [-1] * len(refs)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, ref in enumerate(refs):
        forced = ref.extra.get("split") if ref.extra else None
        if forced is not None:
            if forced not in SPLITS:
                raise BuildError(f"subject {ref.subject_id!r}: split {forced!r} not in {SPLITS}")
            codes[i] = SPLITS.index(forced)
            continue
        group = str(ref.extra.get("split_group", ref.subject_id)) if ref.extra else ref.subject_id
        groups.setdefault((ref.sub_dataset, group), []).append(i)
    bounds = np.cumsum(fractions) / np.sum(fractions)
    for sub in sorted({k[0] for k in groups}):
        keys = sorted((k for k in groups if k[0] == sub),
                      key=lambda k: (stable_hash(f"{dataset}/{k[0]}/{k[1]}"), k[1]))
        total = sum(len(groups[k]) for k in keys)
        done = 0
        for key in keys:
            code = int(np.searchsorted(bounds, done / total, side="right"))
            for i in groups[key]:
                codes[i] = min(code, len(SPLITS) - 1)
            done += len(groups[key])
    return codes


# --------------------------------------------------------------------------- workers

@lru_cache(maxsize=8)
def _cached_recipe(name: str, options_json: str):
    return get_recipe(name, json.loads(options_json) or None)


def _init_worker() -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # Renamed into place only when complete, so a killed process never leaves a partial
    # file under the final name (no fsync: a resume re-checks every file, see _usable).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def process_subject(recipe, ref: SubjectRef, info: DatasetInfo, params: dict,
                    result_path: Path) -> dict:
    """Load, check, slice one subject and save its arrays; returns a status dict."""
    try:
        subject = recipe.load(ref)
        arrays = slice_subject(subject, info, params["size"], params["slices"], params["dtype"])
    except (RecipeError, PreprocessingError) as exc:
        return _skip(ref, str(exc))
    except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
        return _skip(ref, f"{_files(ref)}: {type(exc).__name__}: {exc}")
    arrays["subject"] = np.asarray([ref.subject_id])
    arrays["sub_dataset"] = np.asarray([ref.sub_dataset])
    _atomic_savez(result_path, arrays)
    return {"status": "ok", "subject": ref.subject_id, "slices": int(arrays["plane"].shape[0])}


def _files(ref: SubjectRef) -> str:
    return ", ".join(str(p) for p in ref.paths.values()) or f"subject {ref.subject_id!r}"


def _skip(ref: SubjectRef, problem: str) -> dict:
    first = next(iter(ref.paths.values()), "")
    return {"status": "skipped", "subject": ref.subject_id, "sub_dataset": ref.sub_dataset,
            "file": str(first), "problem": problem}


def _worker(name: str, options_json: str, ref: SubjectRef, info: DatasetInfo, params: dict,
            result_path: str) -> dict:
    return process_subject(_cached_recipe(name, options_json), ref, info, params,
                           Path(result_path))


# --------------------------------------------------------------------------- build

def _check_info(info: DatasetInfo, recipe_name: str) -> None:
    where = f"recipe {recipe_name!r}"
    if not info.name or "/" in info.name:
        raise BuildError(f"{where}: dataset name {info.name!r} must be non-empty without '/'")
    if info.modality not in MODALITIES:
        raise BuildError(f"{where}: modality {info.modality!r} not in {MODALITIES}")
    if info.dims not in (2, 3):
        raise BuildError(f"{where}: dims must be 2 or 3, got {info.dims}")
    if not info.label_names:
        raise BuildError(f"{where}: no label names")
    if len(set(info.label_names)) != len(info.label_names):
        raise BuildError(f"{where}: duplicate label names {info.label_names}")
    bad = [n for n in info.label_names if not n or "/" in n]
    if bad:
        raise BuildError(f"{where}: label names must be non-empty without '/': {bad}")


def _result_name(i: int, ref: SubjectRef) -> str:
    digest = hashlib.sha256(f"{ref.sub_dataset}/{ref.subject_id}".encode()).hexdigest()[:16]
    return f"{i:07d}-{digest}.npz"


def _usable(path: Path) -> bool:
    """A finished subject file from an earlier run that reads back; else removed."""
    if not path.exists():
        return False
    try:
        with np.load(path) as z:
            if "plane" in z.files and "images" in z.files and z["plane"].ndim == 1:
                return True
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        pass
    path.unlink(missing_ok=True)
    return False


def _prepare_workdir(work: Path, fingerprint: dict) -> bool:
    """Create or reuse ``work``; returns True when resuming a matching earlier build."""
    meta = work / "build.json"
    if work.is_dir():
        try:
            if json.loads(meta.read_text()) == fingerprint:
                return True
        except (OSError, json.JSONDecodeError):
            pass
        shutil.rmtree(work)
    work.mkdir(parents=True)
    meta.write_text(json.dumps(fingerprint, sort_keys=True))
    return False


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[skipped]} skipped"), TimeElapsedColumn(),
                    TimeRemainingColumn(), disable=not enabled, transient=False)


def build_index(
    recipe_name: str,
    source: str | os.PathLike,
    out: str | os.PathLike,
    size: int = 128,
    workers: int = 1,
    slices: str | Sequence[str] = "midslice,maxslice",
    on_error: str = "skip",
    recipe_options: dict[str, Any] | None = None,
    dtype: str = "uint8",
    progress: bool = True,
    on_subject_done: Callable[[dict], None] | None = None,
) -> BuildReport:
    """Build a one-dataset index file at ``out`` from ``source`` with recipe ``recipe_name``.

    size: square side of stored slices; workers: processes (0 = all cores, 1 = in-process);
    slices: "midslice,maxslice" or "all" (3D only); on_error: "skip" (log and go on) or
    "stop" (raise BuildError, keeping finished work for a rerun); recipe_options: passed to
    the recipe's ``with_options``; dtype: "uint8" or "float16" images.
    """
    start = time.perf_counter()
    source, out = Path(source), Path(out)
    if on_error not in ("skip", "stop"):
        raise BuildError(f"on_error must be 'skip' or 'stop', got {on_error!r}")
    if dtype not in IMAGE_DTYPES:
        raise BuildError(f"dtype must be one of {IMAGE_DTYPES}, got {dtype!r}")
    if not 8 <= int(size) <= 4096:
        raise BuildError(f"size must be between 8 and 4096, got {size}")
    try:
        modes = parse_slices(slices)
    except ValueError as exc:
        raise BuildError(str(exc)) from None
    if int(workers) < 0:
        raise BuildError(f"workers must be 0 (all cores) or more, got {workers}")
    if not source.exists():
        raise BuildError(f"{source}: source not found")
    if out.is_dir():
        raise BuildError(f"{out}: is a folder; give the output index file name, e.g. "
                         f"{out / 'index.h5'}")
    try:
        check_output_folder(out.parent)  # created below when missing
    except OutputFolderError as exc:
        raise BuildError(str(exc)) from None
    options = dict(recipe_options or {})
    options_json = json.dumps(options, sort_keys=True)
    try:
        recipe = get_recipe(recipe_name, options or None)
        info = recipe.describe(source)
        refs = list(recipe.subjects(source))
    except RecipeError as exc:
        raise BuildError(str(exc)) from None
    _check_info(info, recipe_name)
    if not refs:
        raise BuildError(f"{source}: recipe {recipe_name!r} found no subjects (empty dataset)")
    keys = [(r.sub_dataset, r.subject_id) for r in refs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})[:5]
        raise BuildError(f"{source}: duplicate subject ids {dup}")
    splits = assign_splits(refs, info.name)
    params = {"size": int(size), "slices": list(modes), "dtype": dtype}

    fingerprint = {
        "schema": SCHEMA_VERSION, "colour": 1, "recipe": recipe_name, "options": options_json,
        "source": str(source.resolve()), "params": params,
        "subjects": hashlib.sha256(json.dumps(keys).encode()).hexdigest(),
        "labels": info.label_names,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.with_name(out.name + WORK_SUFFIX)
    resuming = _prepare_workdir(work, fingerprint)
    result_paths = [work / _result_name(i, r) for i, r in enumerate(refs)]
    todo = [i for i, p in enumerate(result_paths) if not (resuming and _usable(p))]
    report = BuildReport(out=out, dataset=info.name, subjects=len(refs), built=0,
                         resumed=len(refs) - len(todo) if resuming else 0)
    skipped: dict[int, dict] = {}

    def handle(i: int, result: dict) -> None:
        if result["status"] != "ok":
            skipped[i] = result
            if on_error == "stop":
                raise BuildError(f"{result['problem']} (subject {result['subject']!r}; "
                                 f"finished work kept in {work} for a rerun)")
        if on_subject_done is not None:
            on_subject_done(result)

    n_workers = (os.cpu_count() or 1) if workers == 0 else max(1, int(workers))
    with _progress(progress) as bar:
        task = bar.add_task(f"index {info.name}", total=len(refs),
                            completed=len(refs) - len(todo), skipped=0)
        if n_workers == 1 or len(todo) <= 1:
            for i in todo:
                handle(i, process_subject(recipe, refs[i], info, params, result_paths[i]))
                bar.update(task, advance=1, skipped=len(skipped))
        else:
            pool = ProcessPoolExecutor(max_workers=min(n_workers, len(todo)),
                                       initializer=_init_worker)
            try:
                pending = {pool.submit(_worker, recipe_name, options_json, refs[i], info, params,
                                       str(result_paths[i])): i for i in todo}
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in sorted(done, key=lambda f: pending[f]):
                        i = pending.pop(fut)
                        handle(i, fut.result())
                        bar.update(task, advance=1, skipped=len(skipped))
            finally:
                pool.shutdown(wait=True, cancel_futures=True)

    report.skipped = [skipped[i] for i in sorted(skipped)]
    ok = [i for i in range(len(refs)) if i not in skipped]
    if not ok:
        first = "; ".join(s["problem"] for s in report.skipped[:3])
        raise BuildError(f"{source}: no usable subjects ({len(skipped)} skipped: {first})")
    report.built = len(ok)
    report.slices = _assemble(out, info, recipe_name, options, params,
                              [(result_paths[i], splits[i]) for i in ok], report.skipped,
                              len(refs))
    shutil.rmtree(work, ignore_errors=True)
    report.seconds = time.perf_counter() - start
    return report


def _assemble(out: Path, info: DatasetInfo, recipe_name: str, options: dict, params: dict,
              results: list[tuple[Path, int]], skipped: list[dict], n_subjects: int) -> int:
    """Write the finished per-subject files into ``out`` through a temporary file."""
    counts, has_colour = [], False
    for path, _ in results:
        with np.load(path) as z:
            counts.append(int(z["plane"].shape[0]))
            has_colour = has_colour or "colour" in z.files
    total = sum(counts)
    if total == 0:
        raise BuildError(f"{info.name}: no slices selected from {len(results)} subjects "
                         "(are all masks empty? try --slices midslice,maxslice)")
    size, L = params["size"], len(info.label_names)
    store = np.uint8 if params["dtype"] == "uint8" else np.float16
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    preprocessing = {
        "size": size, "image_dtype": params["dtype"], "slices": params["slices"],
        "intensity": {"modality": info.modality,
                      "window": list(info.ct_window) if info.ct_window else None,
                      "rule": "ct: clip to window (default [-500, 1000]) then min-max; "
                              "mr: clip to 0.5-99.5 percentiles of non-zero voxels then "
                              "min-max; other: min-max; per subject on the whole volume"},
        "geometry": "zero-pad to square; gaussian blur sigma=(old/new)/4 when shrinking; "
                    "bilinear resize; masks nearest per label",
        "split": "60/20/20 train/val/test by SHA-256 rank of subject id within sub-dataset",
    }
    if has_colour:
        preprocessing["colour"] = ("'colour' (N, 3, S, S): R, G, B of colour images, each "
                                   "normalised and resized like the grey image; grey images "
                                   "repeat it three times")
    try:
        with h5py.File(tmp, "w", track_order=False) as f:
            write_root_attrs(f)
            g = f.create_group("datasets").create_group(info.name)
            for key, value in {
                "name": info.name, "modality": info.modality,
                "modality_name": info.modality_name, "label_names": json_attr(info.label_names),
                "dims": info.dims, "source": info.source, "citation": info.citation,
                "license": info.license, "ct_window": json_attr(info.ct_window),
                "preprocessing": json_attr(preprocessing), "recipe": recipe_name,
                "recipe_options": json_attr(options), "extra": json.dumps(
                    info.extra, sort_keys=True, default=str),
                "n_subjects": n_subjects, "n_skipped": len(skipped),
            }.items():
                g.attrs[key] = value
            comp = {"compression": "gzip", "compression_opts": 4, "track_times": False}
            dsets = {
                "images": g.create_dataset("images", (total, size, size), dtype=store,
                                           chunks=(1, size, size), **comp),
                "masks": g.create_dataset("masks", (total, L, size, size), dtype=np.uint8,
                                          chunks=(1, 1, size, size), **comp),
            }
            if has_colour:  # grey images of a mostly colour dataset get three equal channels
                dsets["colour"] = g.create_dataset("colour", (total, 3, size, size), dtype=store,
                                                   chunks=(1, 3, size, size), **comp)
            small: dict[str, list[np.ndarray]] = {}
            row = 0
            for (path, split), n in zip(results, counts, strict=True):
                with np.load(path) as z:
                    for key in ("images", "masks"):
                        dsets[key][row:row + n] = z[key]
                    if has_colour:
                        dsets["colour"][row:row + n] = (
                            z["colour"] if "colour" in z.files
                            else np.repeat(z["images"][:, None], 3, axis=1))
                    for key in ("plane", "slice_index", "selected", "foreground", "orig_shape",
                                "orig_spacing", "spacing"):
                        small.setdefault(key, []).append(z[key])
                    small.setdefault("subject", []).append(np.repeat(z["subject"], n))
                    small.setdefault("sub_dataset", []).append(np.repeat(z["sub_dataset"], n))
                    small.setdefault("split", []).append(np.full(n, split, dtype=np.uint8))
                row += n
            for key, parts in small.items():
                data = np.concatenate(parts)
                if key in ("subject", "sub_dataset"):
                    g.create_dataset(key, data=data.astype(object), dtype=STR_DTYPE,
                                     track_times=False)
                else:
                    g.create_dataset(key, data=data, track_times=False)
            g["split"].attrs["names"] = json_attr(list(SPLITS))
            g.create_dataset("log", data=np.asarray(
                [json.dumps(s, sort_keys=True) for s in skipped], dtype=object),
                dtype=STR_DTYPE, track_times=False)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return total


def report_dict(report: BuildReport) -> dict:
    """BuildReport -> JSON-able dict."""
    d = asdict(report)
    d["out"] = str(report.out)
    d["slices_per_second"] = report.slices_per_second
    return d
