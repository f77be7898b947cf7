"""The HDF5 task index: layout constants, reading, task table, validation, manifests, merge.

See ``docs/index-format.md`` for the full description. In short, a file holds
``/datasets/<name>`` groups; each has per-slice arrays (``images``, ``masks``,
``subject``, ``sub_dataset``, ``split``, ``plane``, ``slice_index``, ``selected``,
``foreground``, ``orig_shape``, ``orig_spacing``, ``spacing``; optionally ``colour``, the
R, G, B of colour sources), a ``log`` of skipped items and dataset attributes. A task is
(dataset, sub-dataset, modality, plane, label).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from incontext.atomic import atomic_write_text, check_output_folder

FORMAT = "incontext-index"
SCHEMA_VERSION = 1
MANIFEST_FORMAT = "incontext-index-manifest"
SPLITS = ("train", "val", "test")
PLANES = ("2d", "axis0", "axis1", "axis2")
PER_SLICE = (
    "images", "masks", "subject", "sub_dataset", "split", "plane", "slice_index",
    "selected", "foreground", "orig_shape", "orig_spacing", "spacing",
)
REQUIRED_ATTRS = ("name", "modality", "modality_name", "label_names", "dims", "source",
                  "citation", "license", "preprocessing")
STR_DTYPE = h5py.string_dtype("utf-8")


class IndexFormatError(ValueError):
    """A problem with an index file or manifest; the message names the file."""




@dataclass
class TaskInfo:
    """One binary 2D task: (dataset, sub-dataset, modality, plane, label)."""

    name: str
    dataset: str
    sub_dataset: str
    modality: str
    modality_name: str
    plane: str
    label: str
    label_index: int
    counts: dict[str, int] = field(default_factory=dict)  # split -> slices
    subjects: dict[str, int] = field(default_factory=dict)  # split -> distinct subjects
    nonempty: dict[str, int] = field(default_factory=dict)  # split -> slices with foreground


def task_name(dataset: str, sub_dataset: str, plane: str, label: str) -> str:
    """``dataset/sub_dataset/plane/label`` (the sub-dataset part left out when empty)."""
    parts = [dataset, sub_dataset, plane, label] if sub_dataset else [dataset, plane, label]
    return "/".join(parts)


def json_attr(value) -> str:
    return json.dumps(value, sort_keys=True)


def read_json_attr(group: h5py.Group, key: str, default=None):
    """A JSON-encoded attribute; IndexFormatError naming the file and group when malformed."""
    raw = group.attrs.get(key)
    if raw is None:
        return default
    try:
        if isinstance(raw, bytes):
            raw = raw.decode()
        return json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise IndexFormatError(f"{group.file.filename}: {group.name} attribute {key!r} is "
                               f"not valid JSON ({exc})") from None


def decode_strings(values: np.ndarray) -> np.ndarray:
    """h5py string array -> numpy array of Python str (object dtype)."""
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=object)


# --------------------------------------------------------------------------- files, manifests

def resolve_paths(path_or_paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """An .h5 file, a manifest .json, or a list of either -> the shard files (must exist)."""
    if isinstance(path_or_paths, str | os.PathLike):
        items: Iterable = [path_or_paths]
    else:
        items = path_or_paths
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if not path.exists():
            raise FileNotFoundError(f"{path}: index file not found")
        if path.is_dir():
            raise IndexFormatError(f"{path}: is a folder, not an index file (.h5) or manifest "
                                   "(.json)")
        if path.suffix.lower() == ".json":
            out.extend(read_manifest(path))
        else:
            out.append(path)
    if not out:
        raise IndexFormatError("no index files given")
    return out


def read_manifest(path: Path) -> list[Path]:
    """Shard paths listed by a manifest (relative paths are relative to the manifest)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{path}: cannot read manifest ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise IndexFormatError(f"{path}: not an incontext index manifest "
                               f"(format != {MANIFEST_FORMAT})")
    shards = data.get("shards")
    if not isinstance(shards, list) or not all(isinstance(s, str) for s in shards) or not shards:
        raise IndexFormatError(f"{path}: 'shards' must be a non-empty list of file names")
    paths = [(Path(path).parent / s) for s in shards]
    for shard in paths:
        if not shard.exists():
            raise FileNotFoundError(f"{path}: shard {shard} not found")
        if shard.is_dir():
            raise IndexFormatError(f"{path}: shard {shard} is a folder, not an index file")
    return paths




def write_manifest(path: str | os.PathLike, shards: Sequence[str | os.PathLike]) -> Path:
    """Write a manifest listing ``shards`` (stored relative to the manifest when possible)."""
    path = Path(path)
    rel = []
    for shard in shards:
        shard = Path(shard)
        try:
            rel.append(os.path.relpath(shard.resolve(), path.resolve().parent))
        except ValueError:  # another drive
            rel.append(str(shard.resolve()))
    atomic_write_text(path, json.dumps({"format": MANIFEST_FORMAT, "version": 1,
                                        "shards": rel}, indent=2) + "\n")
    return path


def open_h5(path: Path) -> h5py.File:
    """Open an index file read-only, checking the format and schema version."""
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise IndexFormatError(f"{path}: not a readable HDF5 file ({exc})") from None
    fmt = f.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != FORMAT:
        f.close()
        raise IndexFormatError(f"{path}: not an incontext index (format attribute {fmt!r})")
    version = int(f.attrs.get("schema_version", -1))
    if version != SCHEMA_VERSION:
        f.close()
        raise IndexFormatError(f"{path}: schema version {version} not supported "
                          f"(this incontext reads {SCHEMA_VERSION})")
    if "datasets" not in f:
        f.close()
        raise IndexFormatError(f"{path}: no /datasets group")
    return f


# --------------------------------------------------------------------------- group metadata

@dataclass
class GroupMeta:
    """Everything about one dataset group except pixels (small, read at open)."""

    path: Path
    name: str
    attrs: dict
    label_names: list[str]
    subject: np.ndarray  # (N,) object str
    sub_dataset: np.ndarray  # (N,) object str
    split: np.ndarray  # (N,) uint8
    plane: np.ndarray  # (N,) uint8
    selected: np.ndarray  # (N, L+1) bool
    foreground: np.ndarray  # (N, L) int
    spacing: np.ndarray  # (N, 2) float32
    log: list[dict]

    @property
    def size(self) -> int:
        return int(self.split.shape[0])

    def task_rows(self, sub_dataset: str, plane: int, label_index: int) -> np.ndarray:
        """Slice rows belonging to one task (midslice rows plus rows picked for this label)."""
        member = self.selected[:, 0] | self.selected[:, 1 + label_index]
        return np.flatnonzero(member & (self.plane == plane) & (self.sub_dataset == sub_dataset))


def group_attrs(group: h5py.Group) -> dict:
    out = {}
    for key, value in group.attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def read_group_meta(path: Path, group: h5py.Group) -> GroupMeta:
    """Read a dataset group's per-slice metadata and attributes (checked for consistency)."""
    attrs = group_attrs(group)
    missing = [k for k in PER_SLICE if k not in group]
    if missing:
        raise IndexFormatError(f"{path}: group {group.name} lacks {missing}")
    try:
        meta = _read_meta_arrays(path, group, attrs)
        log = [json.loads(s) for s in decode_strings(group["log"][()])] if "log" in group else []
    except (OSError, TypeError, ValueError) as exc:
        if isinstance(exc, IndexFormatError):
            raise
        raise IndexFormatError(f"{path}: group {group.name} cannot be read ({exc}); "
                               "run `incontext index validate`") from None
    meta.log = log
    _check_meta(meta, group)
    return meta


def _check_meta(meta: GroupMeta, group: h5py.Group) -> None:
    """Shapes and codes that the task table relies on; IndexFormatError naming the file."""
    n, n_labels = meta.size, len(meta.label_names)
    where = f"{meta.path}: group {group.name}"
    shapes = {"subject": meta.subject.shape, "sub_dataset": meta.sub_dataset.shape,
              "plane": meta.plane.shape, "selected": meta.selected.shape,
              "foreground": meta.foreground.shape, "spacing": meta.spacing.shape,
              "images": group["images"].shape[:1], "masks": group["masks"].shape[:2]}
    expect = {"subject": (n,), "sub_dataset": (n,), "plane": (n,), "selected": (n, n_labels + 1),
              "foreground": (n, n_labels), "spacing": (n, 2), "images": (n,),
              "masks": (n, n_labels)}
    bad = [f"{k} {shapes[k]} (expected {expect[k]})" for k in expect if shapes[k] != expect[k]]
    if bad:
        raise IndexFormatError(f"{where}: array shapes disagree: {'; '.join(bad)}")
    if n and meta.split.max() >= len(SPLITS):
        raise IndexFormatError(f"{where}: split codes outside 0..{len(SPLITS) - 1}")
    if n and meta.plane.max() >= len(PLANES):
        raise IndexFormatError(f"{where}: plane codes outside 0..{len(PLANES) - 1}")


def _read_meta_arrays(path: Path, group: h5py.Group, attrs: dict) -> GroupMeta:
    return GroupMeta(
        path=Path(path),
        name=str(attrs.get("name", group.name.rsplit("/", 1)[-1])),
        attrs=attrs,
        label_names=list(read_json_attr(group, "label_names", [])),
        subject=decode_strings(group["subject"][()]),
        sub_dataset=decode_strings(group["sub_dataset"][()]),
        split=group["split"][()].astype(np.uint8),
        plane=group["plane"][()].astype(np.uint8),
        selected=group["selected"][()].astype(bool),
        foreground=group["foreground"][()].astype(np.int64),
        spacing=group["spacing"][()].astype(np.float32),
        log=[],
    )


def group_tasks(meta: GroupMeta) -> list[tuple[TaskInfo, np.ndarray]]:
    """The task table of one group: (TaskInfo, rows) for every task with at least one slice."""
    out = []
    modality = str(meta.attrs.get("modality", "other"))
    modality_name = str(meta.attrs.get("modality_name", modality))
    for sub in sorted(set(meta.sub_dataset.tolist())):
        for plane in sorted(set(meta.plane.tolist())):
            for li, label in enumerate(meta.label_names):
                rows = meta.task_rows(sub, plane, li)
                if rows.size == 0:
                    continue
                split = meta.split[rows]
                nonempty = meta.foreground[rows, li] > 0
                info = TaskInfo(
                    name=task_name(meta.name, sub, PLANES[plane], label),
                    dataset=meta.name, sub_dataset=sub, modality=modality,
                    modality_name=modality_name, plane=PLANES[plane], label=label,
                    label_index=li,
                    counts={s: int((split == i).sum()) for i, s in enumerate(SPLITS)},
                    subjects={s: len(set(meta.subject[rows[split == i]].tolist()))
                              for i, s in enumerate(SPLITS)},
                    nonempty={s: int(nonempty[split == i].sum()) for i, s in enumerate(SPLITS)},
                )
                out.append((info, rows))
    return out


# --------------------------------------------------------------------------- summary, validation

def summarize(path_or_paths) -> dict:
    """A JSON-able summary: datasets (attributes, counts, log size) and the task table."""
    datasets, tasks = [], []
    for path in resolve_paths(path_or_paths):
        with open_h5(path) as f:
            for key in sorted(f["datasets"]):
                meta = read_group_meta(path, f["datasets"][key])
                datasets.append({
                    "file": str(path), "name": meta.name,
                    "modality": meta.attrs.get("modality"),
                    "modality_name": meta.attrs.get("modality_name"),
                    "dims": meta.attrs.get("dims"),
                    "label_names": meta.label_names,
                    "sub_datasets": sorted(set(meta.sub_dataset.tolist())),
                    "subjects": {s: len(set(meta.subject[meta.split == i].tolist()))
                                 for i, s in enumerate(SPLITS)},
                    "slices": {s: int((meta.split == i).sum()) for i, s in enumerate(SPLITS)},
                    "image_shape": list(f["datasets"][key]["images"].shape[1:]),
                    "colour": "colour" in f["datasets"][key],
                    "skipped": len(meta.log),
                    "source": meta.attrs.get("source", ""),
                    "license": meta.attrs.get("license", ""),
                })
                tasks.extend(vars(info) for info, _ in group_tasks(meta))
    return {"datasets": datasets, "tasks": tasks}


def validate(path_or_paths) -> list[str]:
    """Schema and integrity problems of an index (empty list when it is fine)."""
    problems: list[str] = []
    try:
        paths = resolve_paths(path_or_paths)
    except (FileNotFoundError, IndexFormatError) as exc:
        return [str(exc)]
    seen: dict[str, Path] = {}
    for path in paths:
        try:
            f = open_h5(path)
        except IndexFormatError as exc:
            problems.append(str(exc))
            continue
        with f:
            if len(f["datasets"]) == 0:
                problems.append(f"{path}: no datasets")
            for key in sorted(f["datasets"]):
                where = f"{path}:/datasets/{key}"
                if key in seen:
                    problems.append(f"{where}: dataset also in {seen[key]}")
                seen[key] = path
                try:
                    problems.extend(_validate_group(where, path, f["datasets"][key]))
                except OSError as exc:
                    problems.append(f"{where}: cannot be read ({exc}); the file is damaged")
    return problems


def _validate_group(where: str, path: Path, g: h5py.Group) -> list[str]:
    problems = [f"{where}: missing attribute {a!r}" for a in REQUIRED_ATTRS if a not in g.attrs]
    missing = [k for k in PER_SLICE if k not in g]
    if missing:
        return problems + [f"{where}: missing arrays {missing}"]
    try:
        labels = read_json_attr(g, "label_names", [])
        json.loads(g.attrs.get("preprocessing", "{}"))
    except IndexFormatError as exc:
        return problems + [str(exc)]
    except (json.JSONDecodeError, TypeError) as exc:
        return problems + [f"{where}: attribute is not valid JSON ({exc})"]
    n = g["images"].shape[0]
    if n == 0:
        problems.append(f"{where}: no slices")
    img = g["images"]
    if img.ndim != 3 or img.shape[1] != img.shape[2]:
        problems.append(f"{where}: images must be (N, S, S), got {img.shape}")
    if img.dtype not in (np.uint8, np.float16):
        problems.append(f"{where}: images dtype {img.dtype} (expected uint8 or float16)")
    L = len(labels)
    if L == 0:
        problems.append(f"{where}: no label names")
    expect = {"masks": (n, L, *img.shape[1:]), "selected": (n, L + 1), "foreground": (n, L),
              "orig_shape": (n, 3), "orig_spacing": (n, 3), "spacing": (n, 2)}
    for key in ("subject", "sub_dataset", "split", "plane", "slice_index"):
        expect[key] = (n,)
    for key, shape in expect.items():
        if g[key].shape != shape:
            problems.append(f"{where}: {key} has shape {g[key].shape}, expected {shape}")
    if problems:
        return problems
    split, plane = g["split"][()], g["plane"][()]
    if split.size and split.max() >= len(SPLITS):
        problems.append(f"{where}: split codes outside 0..{len(SPLITS) - 1}")
    if plane.size and plane.max() >= len(PLANES):
        problems.append(f"{where}: plane codes outside 0..{len(PLANES) - 1}")
    subjects = decode_strings(g["subject"][()])
    if any(s == "" for s in subjects):
        problems.append(f"{where}: empty subject id")
    by_subject: dict[str, set[int]] = {}
    for s, sp in zip(subjects.tolist(), split.tolist(), strict=True):
        by_subject.setdefault(s, set()).add(sp)
    leaking = [s for s, sps in by_subject.items() if len(sps) > 1]
    if leaking:
        problems.append(f"{where}: subjects in several splits: {leaking[:5]}")
    problems.extend(_validate_pixels(where, g, n, L))
    if "colour" in g:
        col = g["colour"]
        if col.shape != (n, 3, *img.shape[1:]) or col.dtype != img.dtype:
            problems.append(f"{where}: colour must be (N, 3, S, S) of the images' dtype "
                            f"{img.dtype}, got {col.shape} {col.dtype}")
        else:
            problems.extend(_unreadable(where, col, "colour", n))
    if img.chunks is not None and img.chunks[0] != 1:
        problems.append(f"{where}: images must be chunked one slice per chunk, got {img.chunks}")
    return problems


VALIDATE_CHUNK = 256  # rows read at a time by validate


def _unreadable(where: str, dset: h5py.Dataset, name: str, n: int) -> list[str]:
    """A problem naming the first block of ``dset`` whose data cannot be read (damaged file)."""
    for start in range(0, n, VALIDATE_CHUNK):
        try:
            dset[start:start + VALIDATE_CHUNK]
        except OSError as exc:
            return [f"{where}: {name} cannot be read near row {start} ({exc}); the file is "
                    "damaged: rebuild or copy it again"]
    return []


def _validate_pixels(where: str, g: h5py.Group, n: int, n_labels: int) -> list[str]:
    """Masks are 0/1 and match the foreground counts; images are readable and in range."""
    img, fg = g["images"], g["foreground"][()]
    for start in range(0, n, VALIDATE_CHUNK):
        stop = start + VALIDATE_CHUNK
        try:
            m, x = g["masks"][start:stop], img[start:stop]
        except OSError as exc:
            return [f"{where}: images or masks cannot be read near row {start} ({exc}); the "
                    "file is damaged: rebuild or copy it again"]
        if m.size and m.max() > 1:
            return [f"{where}: masks hold values other than 0/1 near row {start}"]
        if not np.array_equal(m.reshape(m.shape[0], n_labels, -1).sum(-1), fg[start:stop]):
            return [f"{where}: foreground counts disagree with masks near row {start}"]
        if img.dtype == np.float16:
            x = x.astype(np.float32)
            if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
                return [f"{where}: float16 images outside [0, 1] near row {start}"]
    return []


# --------------------------------------------------------------------------- merge

def merge(inputs: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Copy the dataset groups of several index files (or manifests) into one file, atomically.

    Dataset names must be unique across the inputs.
    """
    out = Path(out)
    paths = resolve_paths(list(inputs))
    if any(p.resolve() == out.resolve() for p in paths if out.exists()):
        raise IndexFormatError(f"{out}: output is also an input")
    tmp = temporary_output(out)
    try:
        with h5py.File(tmp, "w") as dst:
            write_root_attrs(dst)
            root = dst.create_group("datasets")
            for path in paths:
                with open_h5(path) as src:
                    for key in sorted(src["datasets"]):
                        if key in root:
                            raise IndexFormatError(f"{path}: dataset {key!r} already taken by an "
                                              "earlier input; names must be unique")
                        src.copy(src["datasets"][key], root, name=key)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def check_output_path(out: Path) -> None:
    """Raise IndexFormatError (or OutputFolderError) unless an index file can be written at
    ``out``: not a folder, in a folder that exists or can be created and is writable."""
    if out.is_dir():
        raise IndexFormatError(f"{out}: is a folder; give the output index file name, e.g. "
                               f"{out / 'index.h5'}")
    check_output_folder(out.parent)


def temporary_output(out: Path) -> Path:
    """An empty temporary file beside ``out`` (folders created) with the permissions a new
    file gets (not mkstemp's 0600); rename it to ``out`` when complete."""
    check_output_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp_name, 0o666 & ~mask)
    return Path(tmp_name)


def write_root_attrs(f: h5py.File) -> None:
    f.attrs["format"] = FORMAT
    f.attrs["schema_version"] = SCHEMA_VERSION
