"""Preprocessed support sets kept between ``segment()`` calls that share them.

``incontext segment`` labels a folder one file at a time against one support set. Each
call would otherwise check, normalise and resize every support again (for 64 colour
supports of 512 × 512 pixels that is longer than the model's own work on the CPU, and
nearly all of the time on a GPU). With ``segment(..., reuse=d)`` the preprocessed
supports are kept in ``d`` under :data:`CACHE_KEY`, next to each label's choices, and
used again only when a fingerprint of the support images, labels and preprocessing
settings matches; a different support set replaces them. Each call fingerprints the
supports again (SHA-1 over every pixel), unless the caller promises, with
:data:`SUPPORTS_FIXED`, that its support arrays never change: then the same array objects
are fingerprinted once (``incontext segment``, whose supports are read-only arrays).
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

CACHE_KEY = "_prepared_supports"  # the entry of a ``reuse`` dict that holds them
# set (True) in a ``reuse`` dict by a caller whose support arrays never change between
# calls, as ``incontext segment``'s (read-only) ones: the fingerprint of the very same
# arrays is then computed once (:func:`fingerprint`)
SUPPORTS_FIXED = "_supports_fixed"
FINGERPRINT_KEY = "_support_fingerprint"  # where :func:`fingerprint` keeps it


@dataclass
class PreparedSupports:
    """A support set ready for the model, and the key it was prepared under.

    present: foreground label values found in the labels, sorted
    grey:    tiling g -> (S, size_g, size_g) normalised grey images
    colour:  tiling g -> (S, 3, size_g, size_g) normalised R, G, B (None: grey task)
    soft:    label value -> tiling g -> (S, size_g, size_g) soft binary labels
    rendered: (label value, tiling g) -> rendering name -> (grey supports, what renders
             the queries alike; see :func:`incontext.colour.support_renderings`), or None
             where the supports cannot be rendered so; filled by :func:`rendered_supports`
    """

    key: str
    present: list[int]
    grey: dict[int, torch.Tensor]
    colour: dict[int, np.ndarray] | None
    soft: dict[int, dict[int, torch.Tensor]]
    rendered: dict[tuple[int, int], dict[str, tuple[np.ndarray, object] | None]] = field(
        default_factory=dict)


def support_key(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                settings: Hashable) -> str:
    """A digest of every support image and label (shape, dtype, bytes) and ``settings``.

    SHA-1: it only tells support sets apart (no security rests on it), and reads 64 colour
    images of 512 x 512 pixels in about a third of BLAKE2b's time (session 31)."""
    digest = hashlib.sha1(repr(settings).encode(), usedforsecurity=False)
    for array in (*images, *labels):
        a = np.ascontiguousarray(array)
        digest.update(f"{a.shape}{a.dtype.str}".encode())
        digest.update(a.view(np.uint8).reshape(-1))
    return digest.hexdigest()


@dataclass(frozen=True)
class _Fingerprint:
    arrays: tuple[np.ndarray, ...]  # the arrays themselves: kept alive, compared by identity
    settings: str
    key: str


def fingerprint(reuse: dict | None, images: Sequence[np.ndarray],
                labels: Sequence[np.ndarray], settings: Hashable) -> str:
    """:func:`support_key`, computed once for the same array objects where ``reuse`` holds
    :data:`SUPPORTS_FIXED` (its caller promises that they never change); otherwise, and
    for other arrays or settings, every call."""
    if not (reuse is not None and reuse.get(SUPPORTS_FIXED)):
        return support_key(images, labels, settings)
    arrays = (*images, *labels)
    kept = reuse.get(FINGERPRINT_KEY)
    if isinstance(kept, _Fingerprint) and kept.settings == repr(settings) \
            and len(kept.arrays) == len(arrays) \
            and all(a is b for a, b in zip(arrays, kept.arrays, strict=True)):
        return kept.key
    key = support_key(images, labels, settings)
    reuse[FINGERPRINT_KEY] = _Fingerprint(arrays, repr(settings), key)
    return key


def rendered_supports(prepared: PreparedSupports, value: int, g: int, names: Sequence[str],
                      rgb: np.ndarray, soft: torch.Tensor) -> dict[str, tuple[np.ndarray, object]]:
    """The supports of label ``value`` at tiling ``g`` in each rendering of ``names`` that
    they allow, computed once per support set (the Fisher mix reads every support pixel)."""
    from incontext.colour import support_renderings

    done = prepared.rendered.setdefault((value, g), {})
    missing = [n for n in names if n not in done]
    if missing:
        new = support_renderings(missing, prepared.grey[g].numpy(), rgb, soft.numpy())
        done.update({n: new.get(n) for n in missing})
    return {n: done[n] for n in names if done[n] is not None}


def cached(reuse: dict | None, key: str | None) -> PreparedSupports | None:
    """The supports kept in ``reuse`` under ``key``, else None."""
    if reuse is None or key is None:
        return None
    prepared = reuse.get(CACHE_KEY)
    return prepared if isinstance(prepared, PreparedSupports) and prepared.key == key else None


def keep(reuse: dict | None, prepared: PreparedSupports) -> None:
    """Keep ``prepared`` in ``reuse``, replacing another support set's and dropping the
    choices made on that set (the entries under label values)."""
    if reuse is not None:
        old = reuse.get(CACHE_KEY)
        if old is not None and getattr(old, "key", None) != prepared.key:
            for label in [k for k in reuse if isinstance(k, int)]:
                del reuse[label]
        reuse[CACHE_KEY] = prepared
