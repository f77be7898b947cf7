"""benchmarks/tile_blend.py: variants scored from one set of 1- and 2-tile probabilities."""


import numpy as np
import torch
from bench_scripts import load_script

from incontext.benchmark.protocol import TaskData


def _load():
    return load_script("tile_blend")


class TruthWithTwoTiles:
    """2 tiles return the true mask of each query (looked up by image), 1 tile an empty map."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.lookup = {img.tobytes(): lab for img, lab in zip(images, labels, strict=True)}

    def resized(self, g, q, si, sl):
        if g == 1:
            return torch.zeros_like(q)
        return torch.stack([torch.from_numpy(self.lookup[x.numpy().tobytes()]) for x in q])


def _task(n_pool: int = 10, n_query: int = 3) -> TaskData:
    rng = np.random.default_rng(0)
    n = n_pool + n_query
    images = rng.random((n, 16, 16), dtype=np.float32)
    labels = np.zeros((n, 16, 16), np.float32)
    for i in range(n):
        labels[i, 2 + i % 5: 9 + i % 5, 3:10] = 1
    return TaskData(name="toy/2d/blob", dataset="toy", pool_images=images[:n_pool],
                    pool_labels=labels[:n_pool], pool_subjects=[f"p{i}" for i in range(n_pool)],
                    query_images=images[n_pool:], query_labels=labels[n_pool:],
                    query_subjects=[f"q{i}" for i in range(n_query)], query_spacing=None,
                    total_queries=n_query)


def test_auto_variants_pick_the_tiling_that_segments_the_supports():
    tb = _load()
    task = _task()
    runner = TruthWithTwoTiles(np.concatenate([task.pool_images, task.query_images]),
                               np.concatenate([task.pool_labels, task.query_labels]))
    out = tb.run_task(runner, task, support_size=4, repeats=2)
    assert set(out) == set(tb.VARIANTS)
    mean = {name: np.mean([d["dice"] for d in draws]) for name, draws in out.items()}
    assert mean["1"] == 0.0 and mean["2"] == 1.0
    assert mean["blend0.5"] == 1.0  # 0.5 * truth clears the cut at 0.5
    for name in ("auto", "auto+blend", "auto-weights"):
        assert mean[name] == 1.0
        assert all(d["weight"] > 0 for d in out[name])  # never the whole-image default


def test_choose_keeps_the_default_unless_beaten_by_the_margin():
    tb = _load()
    scores = {(0.0, 0.5): 0.70, (1.0, 0.5): 0.705, (0.5, 0.3): 0.69}
    assert tb.choose(scores, (0.0, 0.5), margin=0.01) == (0.0, 0.5)
    scores[(1.0, 0.5)] = 0.75
    assert tb.choose(scores, (0.0, 0.5), margin=0.01) == (1.0, 0.5)
