"""End-to-end ``incontext.segment`` throughput on one device: what a user waits for.

One generated task (colour discs on textured background, ``--size`` pixels square):
``--queries`` query images against N supports, with the settings users run:

* ``plain``   fixed cut 0.5, luma, whole image, no flipped supports and no pixel head
  (one forward pass per query batch, no support checks);
* ``default`` what ``segment`` chooses on the supports by default: the cut and colour
  rendering, flipped supports (up to 4 supports; session 25) and the pixel head
  (session 26), whole image (the 2D defaults for images under twice the model's size;
  larger ones also get ``tiles="auto"`` by default since session 14, which this mode
  fixes at 1);
* ``tiles2``  ``default`` plus 2 x 2 tiles (9 passes per query; thin structures);
* ``nearest16`` ``default``, each query (and each support check) with its 16 nearest
  supports (``--nearest 16``; ``segment``'s default above 16 supports since session 29;
  the other modes use all the supports, ``--nearest off``).

Each row is timed three ways: a cold call (support-set checks for the choices, then the
queries), a warm call that reuses those choices (``reuse=``), i.e. the cost per query
when a support set labels many images at once, and one call per query with ``reuse=``
(*per file*: what ``incontext segment`` does for a folder, its supports held as read-only
arrays and fingerprinted once, ``support_cache.SUPPORTS_FIXED``; before session 31's
``segment_throughput-cpu-s31f*.json`` every call fingerprinted them). Times are wall-clock medians
of ``--repeats``.

    python benchmarks/segment_throughput.py                   # --device auto
    python benchmarks/segment_throughput.py --device cuda --supports 16,64
    # table + benchmarks/results/segment_throughput-<cpu|cuda>.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
# every mode but nearest16 runs all the supports (at most 64) per pass, as the results
# files measured before the 16 nearest became segment's default above 16 (session 29);
# the files before session 30 measured "default" before segment had flipped supports
# (session 25) and the pixel head (session 26)
MODES: dict[str, dict] = {
    "plain": {"threshold": 0.5, "colour": "luma", "tiles": 1, "nearest": "off",
              "support_flips": "off", "refine": "off"},
    "default": {"threshold": "auto", "colour": "auto", "tiles": 1, "nearest": "off"},
    "tiles2": {"threshold": "auto", "colour": "auto", "tiles": 2, "nearest": "off"},
    "nearest16": {"threshold": "auto", "colour": "auto", "tiles": 1, "nearest": 16},
}


def make_task(n_images: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, size, size, 3) uint8 colour images and (n, size, size) binary disc labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.empty((n_images, size, size, 3), np.uint8)
    labels = np.empty((n_images, size, size), np.uint8)
    for i in range(n_images):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        r = rng.uniform(0.1, 0.2) * size
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        background = rng.normal(90, 25, (size, size, 1)) + np.array([30.0, 0.0, -20.0])
        image = background + disc[..., None] * np.array([60.0, -30.0, 10.0])
        images[i] = np.clip(image, 0, 255).astype(np.uint8)
        labels[i] = disc
    return images, labels


def time_mode(model, queries: np.ndarray, supports: np.ndarray, labels: np.ndarray,
              settings: dict, repeats: int, batch_size: int | None) -> dict:
    """Median cold (with support checks) and warm (choices reused) seconds for all queries."""
    from incontext import segment
    from incontext.support_cache import SUPPORTS_FIXED

    # as `incontext segment` holds them: one read-only array per support, fingerprinted once
    supports, labels = _read_only(supports), _read_only(labels)
    cold, warm, per_file, choices = [], [], [], None
    for _ in range(repeats):
        reuse: dict = {SUPPORTS_FIXED: True}
        t0 = time.perf_counter()
        out = segment(model, queries, supports, labels, reuse=reuse, batch_size=batch_size,
                      **settings)
        cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        segment(model, queries, supports, labels, reuse=reuse, batch_size=batch_size,
                **settings)
        warm.append(time.perf_counter() - t0)
        t0 = time.perf_counter()  # one call per query, as `incontext segment` labels files
        for one in queries:
            segment(model, one, supports, labels, reuse=reuse, batch_size=batch_size,
                    **settings)
        per_file.append((time.perf_counter() - t0) / len(queries))
        # per label: tiles, cut, rendering, (estimate, checks), flips, pixel head used
        choices = {k: [*v[:5], v[5] is not None] for k, v in reuse.items()
                   if isinstance(k, int)}
    n = len(queries)
    cold_s, warm_s = statistics.median(cold), statistics.median(warm)
    return {"cold_s": cold_s, "warm_s": warm_s, "checks_s": max(cold_s - warm_s, 0.0),
            "ms_per_query": 1e3 * warm_s / n, "queries_per_s": n / warm_s,
            "ms_per_file": 1e3 * statistics.median(per_file),
            "foreground_fraction": float(np.mean([o.mask.mean() > 0 for o in out])),
            "choices": choices}


def _read_only(stack: np.ndarray) -> list[np.ndarray]:
    arrays = [a.copy() for a in stack]
    for a in arrays:
        a.flags.writeable = False
    return arrays


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(model_name: str | None, device: str, supports: list[int], queries: int, size: int,
        modes: list[str], repeats: int, batch_size: int | None) -> dict:
    import torch

    from incontext.device import default_batch_size, resolve_device
    from incontext.models import load_model

    dev = resolve_device(device)
    model = load_model(model_name, device=dev)
    images, labels = make_task(max(supports) + queries, size)
    q_images = images[max(supports):]
    rows = []
    for n in supports:
        for mode in modes:
            result = time_mode(model, q_images, images[:n], labels[:n], MODES[mode],
                               repeats, batch_size)
            rows.append({"mode": mode, "support_size": n, "queries": queries, **result})
            print(json.dumps({k: rows[-1][k] for k in ("mode", "support_size", "cold_s",
                                                        "warm_s")}), flush=True)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()
    return {"benchmark": "segment_throughput", "device": str(dev), "device_name": name,
            "model": model_name or "default", "image_size": size,
            "batch_size": batch_size or default_batch_size(dev),
            "repeats": repeats, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "rows": rows}


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"incontext.segment, {report['image_size']} px colour queries, "
                        f"{report['device']} ({report['device_name']}), batch "
                        f"{report['batch_size']}, {report['threads']} threads")
    for col in ("mode", "N", "queries", "support checks (s)", "ms / query", "queries / s",
                "ms / file"):
        table.add_column(col, justify="right")
    for r in report["rows"]:
        table.add_row(r["mode"], str(r["support_size"]), str(r["queries"]),
                      f"{r['checks_s']:.2f}", f"{r['ms_per_query']:.1f}",
                      f"{r['queries_per_s']:.1f}", f"{r.get('ms_per_file', float('nan')):.0f}")
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="name or .safetensors (default model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--supports", default="16,64", help="support set sizes N")
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--size", type=int, default=512, help="query/support image side")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="queries per forward pass "
                             "(default: the library's, 1 on CPU, 8 on GPU)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON path (default results/segment_throughput-<device>.json)")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"--modes: unknown {unknown}; choose from {list(MODES)}")
    supports = [int(x) for x in args.supports.split(",") if x]
    if not supports or min(supports) < 1 or args.queries < 1 or args.repeats < 1:
        parser.error("--supports, --queries and --repeats must be positive")
    report = run(args.model, args.device, supports, args.queries, args.size, modes,
                 args.repeats, args.batch_size)
    print_table(report)
    out = args.out or RESULTS / f"segment_throughput-{report['device'].split(':')[0]}.json"
    from incontext.atomic import atomic_write_text

    atomic_write_text(out, json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
