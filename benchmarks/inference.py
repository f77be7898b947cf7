"""Inference latency and peak memory: fast UniverSeg path vs the pairwise implementation.

Each (implementation, support size, batch) runs in a fresh subprocess. Peak memory
is the kernel's resident-set high-water mark (VmHWM, reset through
/proc/self/clear_refs just before the first forward pass, with model and inputs
built) minus the resident size at that moment. Latency is the median of ``--repeats`` timed
passes after one warm-up, with the
two implementations timed alternately in one process so that their ratio is
robust to load from other processes.

    python benchmarks/inference.py                     # table + benchmarks/results/inference.json
    python benchmarks/inference.py --sizes 1,8,64 --batches 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _model_and_inputs(support: int, batch: int, resolution: int, seed: int):
    """A seeded UniverSeg v1 (eval mode) and random query/support tensors."""
    import torch

    from incontext.models import UniverSeg

    torch.manual_seed(seed)
    model = UniverSeg().eval()
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(batch, 1, resolution, resolution, generator=g)
    images = torch.rand(batch, support, 1, resolution, resolution, generator=g)
    labels = (torch.rand(batch, support, 1, resolution, resolution, generator=g) > 0.5).float()
    return model, target, images, labels


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark (Linux clear_refs) and return the current RSS in KiB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    current = _status_kib("VmRSS")
    return current if current is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_rss() -> int:
    peak = _status_kib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_one(impl: str, support: int, batch: int, resolution: int, repeats: int,
            min_seconds: float, seed: int) -> dict:
    import torch

    from incontext.models import pairwise_forward

    model, target, images, labels = _model_and_inputs(support, batch, resolution, seed)

    def forward():
        if impl == "fast":
            return model(target, images, labels)
        return pairwise_forward(model, target, images, labels)

    base_kib = _reset_peak_rss()
    times = []
    with torch.inference_mode():
        out = forward()  # warm-up
        start_all = time.perf_counter()
        while len(times) < repeats or (time.perf_counter() - start_all < min_seconds
                                       and len(times) < 50):
            t0 = time.perf_counter()
            out = forward()
            times.append(time.perf_counter() - t0)
    peak_kib = _peak_rss()
    checksum = float(out.double().sum())
    return {
        "impl": impl, "support_size": support, "batch": batch, "resolution": resolution,
        "latency_s": statistics.median(times), "repeats": len(times),
        "peak_mem_mib": (peak_kib - base_kib) / 1024, "checksum": checksum,
        "threads": torch.get_num_threads(),
    }


def time_interleaved(support: int, batch: int, resolution: int, repeats: int,
                     seed: int, pairwise: bool = True) -> dict:
    """Median latency of both implementations, timed alternately in one process.

    Alternating the two makes their ratio robust to load from other processes.
    """
    import torch

    from incontext.models import pairwise_forward

    model, target, images, labels = _model_and_inputs(support, batch, resolution, seed)
    impls = {"fast": lambda: model(target, images, labels)}
    if pairwise:
        impls["pairwise"] = lambda: pairwise_forward(model, target, images, labels)
    times: dict[str, list[float]] = {k: [] for k in impls}
    with torch.inference_mode():
        for fn in impls.values():
            fn()  # warm-up
        for _ in range(repeats):
            for name, fn in impls.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()} | {
        "threads": torch.get_num_threads()}


def max_output_difference(support: int, batch: int, resolution: int, seed: int) -> float:
    import torch

    from incontext.models import pairwise_forward

    model, target, images, labels = _model_and_inputs(support, batch, resolution, seed)
    with torch.inference_mode():
        fast = model(target, images, labels)
        pair = pairwise_forward(model, target, images, labels)
    return float((fast - pair).abs().max())


def _run_json(cmd: list[str], what: str) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        raise SystemExit(f"benchmark worker failed: {what}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,2,4,8,16,32,64")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--max-pairwise-mib", type=float, default=8192,
                        help="skip pairwise runs whose estimated peak memory exceeds this")
    parser.add_argument("--out", type=Path, default=RESULTS / "inference.json")
    parser.add_argument("--timer", nargs=3, metavar=("S", "B", "PAIRWISE"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=3, metavar=("IMPL", "S", "B"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.timer:
        s, b, pw = args.timer
        print(json.dumps(time_interleaved(int(s), int(b), args.resolution, args.repeats, 0,
                                          pairwise=pw == "1")))
        return 0
    if args.worker:
        impl, s, b = args.worker
        result = run_one(impl, int(s), int(b), args.resolution, args.repeats,
                         args.min_seconds, seed=0)
        print(json.dumps(result))
        return 0

    from rich.console import Console
    from rich.progress import track
    from rich.table import Table

    sizes = [int(x) for x in args.sizes.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    rows = []
    jobs = [(b, s) for b in batches for s in sizes]
    for b, s in track(jobs, description="benchmarking"):
        pair = {}
        # measured: the pairwise path peaks at ~48 MiB per (query, support) pair at 128x128
        estimate = 48.0 * b * s * (args.resolution / 128) ** 2
        impls = ("fast", "pairwise") if estimate <= args.max_pairwise_mib else ("fast",)
        for impl in impls:  # peak memory: one fresh process per implementation
            cmd = [sys.executable, __file__, "--worker", impl, str(s), str(b),
                   "--resolution", str(args.resolution), "--repeats", "1",
                   "--min-seconds", "0"]
            pair[impl] = _run_json(cmd, f"{impl} S={s} B={b}")
        timing = _run_json([sys.executable, __file__, "--timer", str(s), str(b),
                            "1" if "pairwise" in impls else "0", "--resolution",
                            str(args.resolution), "--repeats", str(args.repeats)],
                           f"timing S={s} B={b}")
        for impl in impls:
            pair[impl]["latency_s"] = timing[impl]
        skipped = "pairwise" not in pair
        diff = None if skipped else max_output_difference(s, min(b, 2), args.resolution, 0)
        rows.append({
            "support_size": s, "batch": b,
            "fast_latency_s": pair["fast"]["latency_s"],
            "pairwise_latency_s": None if skipped else pair["pairwise"]["latency_s"],
            "speedup": None if skipped else
            pair["pairwise"]["latency_s"] / pair["fast"]["latency_s"],
            "fast_peak_mem_mib": pair["fast"]["peak_mem_mib"],
            "pairwise_peak_mem_mib": None if skipped else pair["pairwise"]["peak_mem_mib"],
            "pairwise_skipped_estimated_mib": estimate if skipped else None,
            "max_abs_difference": diff,
            "threads": pair["fast"]["threads"],
        })

    table = Table(title=f"UniverSeg v1 inference, {args.resolution}x{args.resolution}, "
                        "float32, CPU")
    for col in ("B", "S", "fast (ms)", "pairwise (ms)", "speed-up", "fast MiB",
                "pairwise MiB", "max |diff|"):
        table.add_column(col, justify="right")
    for r in rows:
        if r["pairwise_latency_s"] is None:
            skip = f"skipped (~{r['pairwise_skipped_estimated_mib'] / 1024:.0f} GiB)"
            table.add_row(str(r["batch"]), str(r["support_size"]),
                          f"{r['fast_latency_s'] * 1e3:.0f}", skip, "",
                          f"{r['fast_peak_mem_mib']:.0f}", "", "")
            continue
        table.add_row(str(r["batch"]), str(r["support_size"]),
                      f"{r['fast_latency_s'] * 1e3:.0f}", f"{r['pairwise_latency_s'] * 1e3:.0f}",
                      f"{r['speedup']:.2f}x", f"{r['fast_peak_mem_mib']:.0f}",
                      f"{r['pairwise_peak_mem_mib']:.0f}", f"{r['max_abs_difference']:.1e}")
    Console().print(table)
    import torch

    report = {
        "benchmark": "inference", "resolution": args.resolution, "dtype": "float32",
        "device": "cpu", "torch": torch.__version__, "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
