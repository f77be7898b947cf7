"""Device names for inference and training: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
``"mps"``.

``"auto"`` picks the first CUDA GPU when one is available, else the CPU (Apple's
``mps`` backend only when named). A device that is named but not available is an
error that says so, never a silent fall-back to the CPU.
"""

from __future__ import annotations

import torch

DEVICE_HELP = "auto (a CUDA GPU when available, else cpu), cpu, cuda, cuda:N or mps"


class DeviceError(ValueError):
    """A device name that is malformed or names hardware this machine does not have."""


def default_batch_size(device: torch.device) -> int:
    """Queries per UniverSeg forward pass when not given: 1 on the CPU, 8 elsewhere.

    A query's support features depend on the query, so batching shares no work; on the
    CPU one query at a time is as fast or faster per query and needs a fraction of the
    memory (``benchmarks/segment_throughput.py``), while a GPU needs batches to be busy.
    """
    return 1 if device.type == "cpu" else 8


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """A :class:`torch.device` for ``name``; ``"cuda"`` means ``cuda:local_rank``.

    Raises :class:`DeviceError` for an unknown name or an unavailable device.
    """
    text = str(name).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cuda":
        text = f"cuda:{local_rank}"
    try:
        device = torch.device(text)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}; use {DEVICE_HELP}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unsupported device {name!r}; use {DEVICE_HELP}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r}: CUDA is not available on this machine "
                              "(use --device cpu or auto)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device {name!r}: this machine has {count} CUDA device(s)")
    if device.type == "mps" and not _mps_available():
        raise DeviceError(f"device {name!r}: the mps backend is not available on this machine")
    return device
