"""Episode batches from background worker processes (``[data] workers = N``).

Sampling and augmenting episodes is CPU work (about 20 ms per 128-px episode on one
core); on an accelerator it, not the network, limits the step rate. With
``workers > 0`` each worker process draws whole batches (support size, episodes,
augmentation) from its own random stream and the training loop only moves them to
the device. Streams are seeded from ``(seed, rank, first step of this session,
worker)``, so a resumed run never replays the batches of the first session, but
unlike ``workers = 0`` it does not reproduce the uninterrupted run bit for bit.
"""

from __future__ import annotations

import atexit
import os
import signal
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from incontext.data.episode import Episode


def stack_episodes(episodes: Sequence[Episode],
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Episodes with equal support size -> CPU float tensors (query (B,1,H,W), support
    images and labels (B,S,1,H,W), query labels (B,1,H,W)); the first query of each."""
    def t(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    q = t(np.stack([e.query_images[0] for e in episodes]))[:, None]
    ql = t(np.stack([e.query_labels[0] for e in episodes]))[:, None]
    si = t(np.stack([e.support_images for e in episodes]))[:, :, None]
    sl = t(np.stack([e.support_labels for e in episodes]))[:, :, None]
    return q, si, sl, ql


def draw_batch(source, augmenter, batch_size: int, support_size: int | tuple[int, int],
               rng: np.random.Generator) -> list[Episode]:
    """One training batch: a support size (fixed, or uniform in ``[low, high]``), then
    ``batch_size`` augmented episodes of that size with one query, all drawn from ``rng``."""
    s = support_size if isinstance(support_size, int) else \
        int(rng.integers(support_size[0], support_size[1] + 1))
    return [augmenter(source.sample(rng, s, 1), rng) for _ in range(batch_size)]


class EpisodeBatches(torch.utils.data.IterableDataset):
    """Endless augmented batches; each worker has its own generator (see module doc)."""

    def __init__(self, source, augmenter, batch_size: int,
                 support_size: int | tuple[int, int], seed_entropy: Sequence[int]) -> None:
        super().__init__()
        self.source = source
        self.augmenter = augmenter
        self.batch_size = batch_size
        self.support_size = support_size
        self.seed_entropy = [int(v) for v in seed_entropy]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        rng = np.random.default_rng(np.random.SeedSequence([*self.seed_entropy, worker]))
        while True:
            yield stack_episodes(draw_batch(self.source, self.augmenter, self.batch_size,
                                            self.support_size, rng))


def _init_worker(worker_id: int) -> None:
    # Ctrl-C (or a scheduler's SIGINT) is handled by the training loop, which stops
    # after the current step and saves; workers must not die first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker holds nothing to flush. Leave without interpreter teardown: on a GPU
    # machine (torch 2.11, Python 3.12) a library's thread destructor aborted there
    # ("terminate called without an active exception"), which the training process
    # then reported as a crashed worker at the end of a finished run.
    atexit.register(os._exit, 0)
    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover - cv2 comes with albumentations
        pass


def close_batches(batches: Iterator | None) -> None:
    """Stop the worker processes behind a :func:`batch_iterator` (no-op for None)."""
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is not None:
        try:
            shutdown()
        except RuntimeError:  # a worker that died while stopping; nothing is lost
            pass


def batch_iterator(dataset: EpisodeBatches, workers: int, pin_memory: bool,
                   ) -> Iterator[tuple[torch.Tensor, ...]]:
    """Iterator over ``dataset`` fed by ``workers`` processes (4 batches queued each).

    Workers are spawned, not forked: a child forked after OpenCV's thread pool has run in
    the parent (validation resizing, say) can deadlock in its first augmentation.
    """
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                         worker_init_fn=_init_worker, pin_memory=pin_memory,
                                         prefetch_factor=4, persistent_workers=True,
                                         multiprocessing_context="spawn")
    return iter(loader)
