"""CT intensity windows: named presets and ``"LO,HI"`` parsing (no heavy imports, for the CLI)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["CT_WINDOWS", "resolve_window"]

# CT windows (HU) for common structure classes; ``None`` uses the preprocessing default.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "default": (-500.0, 1000.0),
    "soft-tissue": (-160.0, 240.0),
    "abdomen": (-150.0, 250.0),
    "liver": (-50.0, 200.0),
    "lung": (-1350.0, 150.0),
    "bone": (-450.0, 1050.0),
    "brain": (0.0, 80.0),
    "vessels": (-100.0, 600.0),
}


def resolve_window(window: str | Sequence[float] | None) -> tuple[float, float] | None:
    """``"LO,HI"``, a preset name from :data:`CT_WINDOWS`, a pair, or None -> (lo, hi) | None."""
    if window is None:
        return None
    if isinstance(window, str):
        key = window.strip().lower().replace("_", "-")
        if key in CT_WINDOWS:
            return CT_WINDOWS[key]
        parts = window.split(",")
        try:
            lo, hi = (float(p) for p in parts)
        except ValueError:
            raise ValueError(f"window {window!r}: give LO,HI (e.g. -160,240) or one of "
                             f"{', '.join(CT_WINDOWS)}") from None
    else:
        if len(window) != 2:
            raise ValueError(f"window {window!r}: give two values (low, high)")
        lo, hi = float(window[0]), float(window[1])
    if not lo < hi:
        raise ValueError(f"window {window!r}: low must be below high")
    return lo, hi
