"""Held-out task benchmark: in-context model vs classic baselines under one protocol.

``run_benchmark(index, model=..., baselines="all", ...) -> BenchmarkResults``; the
``incontext benchmark`` command wraps it. See docs/benchmark.md.
"""

from __future__ import annotations

from incontext.benchmark.api import DEFAULT_ENSEMBLES, DEFAULT_SUPPORT_SIZES, run_benchmark
from incontext.benchmark.methods import ModelMethod
from incontext.benchmark.protocol import (
    Draw,
    ProtocolError,
    TaskData,
    ensemble_members,
    load_task,
    support_draws,
)
from incontext.benchmark.results import BenchmarkResults
from incontext.benchmark.runner import BenchmarkConfig, Row

__all__ = [
    "DEFAULT_ENSEMBLES", "DEFAULT_SUPPORT_SIZES", "BenchmarkConfig", "BenchmarkResults",
    "Draw", "ModelMethod", "ProtocolError", "Row", "TaskData", "ensemble_members",
    "load_task", "run_benchmark", "support_draws",
]
