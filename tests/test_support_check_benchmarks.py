"""benchmarks/support_dice.py and method_gate.py: the support-set check as an estimate, and
a gate between the model and training-free baselines, on tasks with known answers."""

import numpy as np
from bench_scripts import load_script
from fake_models import EchoQuery, MeanSupportLabel

from incontext.benchmark.protocol import TaskData


def _task(inverted: bool = False, n_pool: int = 8, n_query: int = 3) -> TaskData:
    """Discs at varying places; the image is the label (or its inverse)."""
    rng = np.random.default_rng(0)
    n = n_pool + n_query
    yy, xx = np.mgrid[:32, :32]
    labels = np.zeros((n, 32, 32), np.float32)
    for i in range(n):
        cy, cx = rng.integers(9, 23, 2)
        labels[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= 36
    images = 1 - labels if inverted else labels.copy()
    return TaskData(name="toy/2d/disc", dataset="toy", pool_images=images[:n_pool],
                    pool_labels=labels[:n_pool], pool_subjects=[f"p{i}" for i in range(n_pool)],
                    query_images=images[n_pool:], query_labels=labels[n_pool:],
                    query_subjects=[f"q{i}" for i in range(n_query)], query_spacing=None,
                    total_queries=n_query)


def test_support_dice_rows_pair_the_estimate_with_the_query_dice():
    sd = load_script("support_dice")
    good = sd.run_task(EchoQuery(32), _task(), support_size=6, repeats=2)
    assert len(good) == 2 and all(r["checks"] == 6 for r in good)
    assert all(r["estimate"] > 0.9 and r["query"] > 0.9 for r in good)
    bad = sd.run_task(EchoQuery(32), _task(inverted=True), support_size=6, repeats=2)
    assert all(r["estimate"] < 0.1 and r["query"] < 0.1 for r in bad)


def test_gate_hands_a_task_to_the_threshold_when_it_segments_the_supports_better():
    mg = load_script("method_gate")
    # the mean support label (a blur of discs elsewhere) is poor; a grey-level cut is exact
    rows = mg.run_task(MeanSupportLabel(32), _task(), support_size=6, repeats=2)
    assert len(rows) == 2
    for row in rows:
        assert row["loo"]["threshold"] > row["loo"]["model"] + 0.1
        assert mg.gate(row, ("threshold",), margin=0.05) == "threshold"
        assert mg.gate(row, ("threshold",), margin=1.0) == "model"  # unless the margin forbids
        assert row["query"]["threshold"] > row["query"]["model"]
    # and the model keeps a task it segments best
    rows = mg.run_task(EchoQuery(32), _task(), support_size=6, repeats=1)
    assert mg.gate(rows[0], ("threshold", "nearest-support"), margin=0.0) == "model"
