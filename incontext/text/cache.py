"""Prompt-embedding cache: an in-memory dict plus an optional HDF5 or NPZ file.

Embeddings are keyed by (encoder key, prompt string). In an HDF5 file (for example the
task index) they live in the group ``/text_embeddings/<hash of encoder key>`` with datasets
``prompts`` (strings) and ``embeddings`` (N, dim float32) and the attribute ``encoder``.
Saving never modifies a file in place: the file (or a copy of it) is written to a
temporary file next to it and renamed over it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from incontext.text.base import TextEncoder, TextEncoderError

GROUP = "text_embeddings"


def _group_name(encoder_key: str) -> str:
    return hashlib.sha1(encoder_key.encode()).hexdigest()[:16]


class EmbeddingCache:
    """Embeddings by (encoder key, prompt); ``path`` (.h5/.hdf5 or .npz) is read when it exists."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._data: dict[str, dict[str, np.ndarray]] = {}
        self.dirty = False
        if self.path is not None:
            if self.path.suffix.lower() not in (".h5", ".hdf5", ".npz"):
                raise TextEncoderError(f"{self.path}: embedding cache must be .h5, .hdf5 or .npz")
            if self.path.exists():
                self._read(self.path)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return sum(len(v) for v in self._data.values())

    def get(self, encoder_key: str, prompt: str) -> np.ndarray | None:
        return self._data.get(encoder_key, {}).get(prompt)

    def put(self, encoder_key: str, prompts: Sequence[str], embeddings: np.ndarray) -> None:
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(prompts):
            raise TextEncoderError(f"cache: {len(prompts)} prompts but embeddings of shape "
                                   f"{embeddings.shape}")
        table = self._data.setdefault(encoder_key, {})
        for prompt, emb in zip(prompts, embeddings, strict=True):
            table[str(prompt)] = emb.copy()
        self.dirty = True

    def embed(self, encoder: TextEncoder, prompts: Sequence[str]) -> np.ndarray:
        """(N, dim) embeddings of ``prompts``; only prompts not cached yet are encoded."""
        key = encoder.key
        missing = sorted({p for p in prompts if self.get(key, p) is None})
        if missing:
            self.put(key, missing, encoder.encode(missing))
        if not prompts:
            return np.zeros((0, encoder.dim), dtype=np.float32)
        return np.stack([self._data[key][p] for p in prompts]).astype(np.float32)

    # ------------------------------------------------------------------ files
    def _read(self, path: Path) -> None:
        if path.suffix.lower() == ".npz":
            try:
                with np.load(path, allow_pickle=False) as z:
                    keys = [str(k) for k in z["encoders"]]
                    for i, key in enumerate(keys):
                        prompts = [str(p) for p in z[f"prompts_{i}"]]
                        self._data[key] = dict(zip(prompts, z[f"embeddings_{i}"], strict=True))
            except (OSError, KeyError, ValueError) as exc:
                raise TextEncoderError(f"{path}: not a readable embedding cache ({exc})") from exc
            return
        try:
            with h5py.File(path, "r") as f:
                if GROUP not in f:
                    return
                for sub in f[GROUP].values():
                    key = sub.attrs["encoder"]
                    key = key.decode() if isinstance(key, bytes) else str(key)
                    prompts = [p.decode() if isinstance(p, bytes) else str(p)
                               for p in sub["prompts"][()]]
                    emb = sub["embeddings"][()].astype(np.float32)
                    self._data[key] = dict(zip(prompts, emb, strict=True))
        except (OSError, KeyError, ValueError) as exc:
            raise TextEncoderError(f"{path}: cannot read /{GROUP} ({exc})") from exc

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write all embeddings to ``path`` (default: the cache's own path), atomically.

        For an existing HDF5 file (e.g. an index) the other groups are kept: the file is
        copied, the copy's ``/text_embeddings`` group replaced, and the copy renamed over it.
        """
        target = Path(path) if path is not None else self.path
        if target is None:
            raise TextEncoderError("EmbeddingCache.save: no path given")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                        suffix=".tmp")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            if target.suffix.lower() == ".npz":
                self._write_npz(tmp)
            else:
                if target.exists():
                    shutil.copy2(target, tmp)
                self._write_h5(tmp, append=target.exists())
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.dirty = False
        return target

    def _write_npz(self, tmp: Path) -> None:
        arrays: dict[str, np.ndarray] = {"encoders": np.array(list(self._data), dtype=str)}
        for i, table in enumerate(self._data.values()):
            arrays[f"prompts_{i}"] = np.array(list(table), dtype=str)
            arrays[f"embeddings_{i}"] = (np.stack(list(table.values())) if table
                                         else np.zeros((0, 0), np.float32))
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    def _write_h5(self, tmp: Path, append: bool) -> None:
        try:
            f = h5py.File(tmp, "a" if append else "w")
        except OSError as exc:
            raise TextEncoderError(f"{tmp}: not a writable HDF5 file ({exc})") from exc
        with f:
            if GROUP in f:
                del f[GROUP]
            root = f.create_group(GROUP)
            for key, table in self._data.items():
                sub = root.create_group(_group_name(key))
                sub.attrs["encoder"] = key
                sub.create_dataset("prompts", data=list(table), dtype=h5py.string_dtype("utf-8"))
                emb = np.stack(list(table.values())) if table else np.zeros((0, 0), np.float32)
                sub.create_dataset("embeddings", data=emb.astype(np.float32))


def embed_prompts(encoder: TextEncoder, prompts: Sequence[str],
                  cache: EmbeddingCache | None = None) -> np.ndarray:
    """(N, dim) embeddings of ``prompts``, through ``cache`` when given."""
    if cache is None:
        return encoder.encode(list(prompts))
    return cache.embed(encoder, list(prompts))
