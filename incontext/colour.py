"""Grey renderings of colour images, chosen per task on the support set.

The in-context models read one grey channel. A colour image can be rendered to grey in
several ways, and the best one depends on the task: the red channel shows the optic disc,
the green one retinal vessels, a stain-specific mix the nuclei of an H&E slide. With
``colour="auto"`` every rendering in :data:`RENDERINGS` is scored by segmenting supports
from the other supports (leave-one-out, as the auto cut does) and the best one is used
for the queries; luma, the default grey, is kept unless another rendering beats it by a
margin. No query label is used.

Renderings, from (N, 3, H, W) R, G, B in [0, 1] (each channel normalised on its own):

* ``luma``: the ordinary grey image (ITU-R 601), as stored in the index;
* ``red``, ``green``, ``blue``: one channel;
* ``fisher``: the pixel-wise Fisher discriminant of foreground against background on the
  support set (a 3-vector of channel weights), each image then rescaled to its 0.5-99.5
  percentiles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

RENDERINGS: tuple[str, ...] = ("luma", "red", "green", "blue", "fisher")
COLOUR_CHOICES: tuple[str, ...] = (*RENDERINGS, "auto")
DEFAULT_COLOUR = "luma"
# another rendering must beat luma's leave-one-out Dice by more than this
COLOUR_MARGIN = 0.01
_CHANNEL = {"red": 0, "green": 1, "blue": 2}


def check_colour(colour: str) -> str:
    """Validate a colour setting (a rendering name or ``"auto"``); returns it."""
    if colour not in COLOUR_CHOICES:
        raise ValueError(f"colour must be one of {', '.join(COLOUR_CHOICES)}, got {colour!r}")
    return colour


def check_rgb(rgb: np.ndarray, like: np.ndarray, what: str) -> np.ndarray:
    """``rgb`` as float32 (N, 3, H, W) in [0, 1] matching grey images ``like`` (N, H, W);
    ValueError naming ``what`` otherwise."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim != 4 or rgb.shape[1] != 3 or rgb.shape[0] != like.shape[0] \
            or rgb.shape[2:] != like.shape[1:]:
        raise ValueError(f"{what}: colour must be (N, 3, H, W) matching the grey images "
                         f"{tuple(like.shape)}, got {tuple(rgb.shape)}")
    if not np.isfinite(rgb).all() or (rgb.size and (rgb.min() < -1e-4 or rgb.max() > 1 + 1e-4)):
        raise ValueError(f"{what}: colour values must be finite and in [0, 1]")
    return np.clip(rgb, 0.0, 1.0)


def fisher_weights(support_rgb: np.ndarray, support_labels: np.ndarray,
                   ridge: float = 1e-4) -> np.ndarray | None:
    """(3,) channel weights separating foreground from background pixels of the supports.

    support_rgb (S, 3, H, W), support_labels (S, H, W) in [0, 1]. Weights sum to +1 in
    absolute value and have a positive sum (so the rendering keeps the image's brightness
    polarity where it can). None when the supports have no foreground or no background.
    """
    x = np.moveaxis(np.asarray(support_rgb, np.float64), 1, -1).reshape(-1, 3)
    fg = np.asarray(support_labels).reshape(-1) >= 0.5
    if fg.all() or not fg.any():
        return None
    mean_fg, mean_bg = x[fg].mean(0), x[~fg].mean(0)
    within = (np.cov(x[fg].T, bias=True) * fg.sum() + np.cov(x[~fg].T, bias=True) * (~fg).sum())
    within = within / fg.size + ridge * np.eye(3)
    w = np.linalg.solve(within, mean_fg - mean_bg)
    total = np.abs(w).sum()
    if not np.isfinite(total) or total == 0:
        return None
    w = w / total
    return -w if w.sum() < 0 else w


def render(rgb: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) -> (N, H, W) float32: the weighted channel sum, each image rescaled so
    its 0.5-99.5 percentiles span [0, 1] (clipped)."""
    grey = np.tensordot(np.asarray(weights, np.float64), np.asarray(rgb, np.float64),
                        axes=([0], [1]))
    lo, hi = np.percentile(grey, [0.5, 99.5], axis=(-2, -1), keepdims=True)
    return np.clip((grey - lo) / np.maximum(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


def support_renderings(names: Sequence[str], support_grey: np.ndarray, support_rgb: np.ndarray,
                       support_labels: np.ndarray) -> dict[str, tuple[np.ndarray, object]]:
    """{name: (support (S, H, W), how)} for each rendering in ``names``; ``how`` is what
    :func:`render_query` needs to render queries the same way (the Fisher weights, the
    channel). ``fisher`` is left out when the supports have no foreground or background."""
    out: dict[str, tuple[np.ndarray, object]] = {}
    for name in names:
        if name == "luma":
            out[name] = (np.asarray(support_grey, np.float32), None)
        elif name in _CHANNEL:
            out[name] = (np.ascontiguousarray(support_rgb[:, _CHANNEL[name]]), _CHANNEL[name])
        elif name == "fisher":
            w = fisher_weights(support_rgb, support_labels)
            if w is not None:
                out[name] = (render(support_rgb, w), w)
        else:
            raise ValueError(f"unknown rendering {name!r}; choose from {', '.join(RENDERINGS)}")
    return out


def render_query(name: str, how: object, query_grey: np.ndarray,
                 query_rgb: np.ndarray) -> np.ndarray:
    """Queries (Q, H, W) rendered as ``support_renderings`` rendered the supports."""
    if name == "luma":
        return np.asarray(query_grey, np.float32)
    if name in _CHANNEL:
        return np.ascontiguousarray(query_rgb[:, int(how)])
    return render(query_rgb, np.asarray(how))


def renderings(names: Sequence[str], support_grey: np.ndarray, query_grey: np.ndarray,
               support_rgb: np.ndarray, query_rgb: np.ndarray, support_labels: np.ndarray
               ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (support (S, H, W), query (Q, H, W))} for each rendering in ``names``.

    ``luma`` is the grey images as given; ``fisher`` is left out when the supports have
    no foreground or no background.
    """
    return {name: (support, render_query(name, how, query_grey, query_rgb))
            for name, (support, how) in support_renderings(
                names, support_grey, support_rgb, support_labels).items()}


def choose_rendering(scores: Mapping[str, float | None], margin: float = COLOUR_MARGIN) -> str:
    """The rendering with the best support-set score; ``luma`` unless another beats it by
    more than ``margin`` (renderings scored None are skipped; all None -> ``luma``)."""
    scored = {k: v for k, v in scores.items() if v is not None}
    if not scored:
        return DEFAULT_COLOUR
    best = max(scored, key=lambda k: (round(scored[k], 6), k == DEFAULT_COLOUR))
    base = scored.get(DEFAULT_COLOUR)
    if base is not None and scored[best] - base <= margin:
        return DEFAULT_COLOUR
    return best


def candidates(colour: str) -> tuple[str, ...]:
    """The renderings a colour setting considers: all for ``"auto"``, else the one named."""
    check_colour(colour)
    return RENDERINGS if colour == "auto" else (colour,)

