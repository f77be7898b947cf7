"""Training throughput and peak memory: fast UniverSeg forward vs the pairwise oracle.

One training step = forward on one batch of episodes, Dice+BCE loss, backward,
gradient clipping and an Adam step (the engine's step without episode sampling
and augmentation, which are timed separately as "data ms/step"). Settings: the
CPU-small and published configs, support sizes 8 and 64, forward through the
model (fast path) or through ``pairwise_forward`` (the literal published
computation).

Each setting runs in a fresh subprocess so its peak resident memory
(``ru_maxrss``) is its own; the reported memory is that peak minus the resident
size just before the first step (model, optimiser and inputs already built), i.e.
what the steps themselves need: activations, gradients and Adam state. On CUDA
it is ``torch.cuda.max_memory_allocated`` instead. steps/s is the number of timed
steps over their wall time, after one warm-up step.

    OMP_NUM_THREADS=1 python benchmarks/training.py            # table + results/training.json
    python benchmarks/training.py --configs cpu-small --supports 8 --steps 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))  # run as a script: import the checkout's packages
CONFIGS = {"cpu-small": ROOT / "configs" / "universeg-cpu-small.toml",
           "published": ROOT / "configs" / "universeg-v1-published.toml"}


def run_one(config_name: str, support: int, impl: str, steps: int, batch: int,
            device_name: str) -> dict:
    import numpy as np
    import torch

    from incontext.models import pairwise_forward
    from incontext.training.augment import EpisodeAugmenter
    from incontext.training.config import load_config
    from incontext.training.distributed import resolve_device
    from incontext.training.engine import build_model, collate
    from incontext.training.losses import segmentation_loss
    from incontext.training.sources import SyntheticSource

    cfg = load_config(CONFIGS[config_name])
    device = resolve_device(device_name)
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    res = cfg.model.resolution
    source = SyntheticSource([1, 2, 3], n_subjects=max(16, min(support + 1, 96)),
                             resolution=res)
    augmenter = EpisodeAugmenter(cfg.augment)
    rng = np.random.default_rng(0)

    def episodes():
        return [augmenter(source.sample(rng, support, 1), rng) for _ in range(batch)]

    data = [episodes()]  # also generates (and caches) the synthetic tasks
    t = time.perf_counter()
    data += [episodes() for _ in range(3)]
    data_ms = (time.perf_counter() - t) / 3 * 1000
    q, si, sl, ql = collate(data[0], device)
    amp = cfg.run.amp and device.type == "cuda"

    def step():
        with torch.autocast("cuda", torch.bfloat16, enabled=amp):
            if impl == "fast":
                logits = model(q, si, sl)
            else:
                logits = pairwise_forward(model, q, si, sl)
        loss = segmentation_loss(logits.float(), ql)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return float(loss)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step()  # warm-up
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    wall = time.perf_counter() - start
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_kib) / 1024
    return {
        "config": config_name, "support": support, "impl": impl, "batch": batch,
        "resolution": res, "encoder_widths": list(cfg.model.encoder_widths),
        "steps": steps, "steps_per_s": steps / wall, "ms_per_step": wall / steps * 1000,
        "peak_mib": peak_mib, "data_ms_per_step": data_ms, "device": str(device),
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="cpu-small,published")
    parser.add_argument("--supports", default="8,64")
    parser.add_argument("--impls", default="fast,pairwise")
    parser.add_argument("--steps", type=int, default=0,
                        help="timed steps per setting (default: 3 for cpu-small, 1 published)")
    parser.add_argument("--batch", type=int, default=1, help="episodes per step")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS / "training.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(run_one(**spec)))
        return 0

    rows = []
    for config_name in args.configs.split(","):
        for support in (int(s) for s in args.supports.split(",")):
            for impl in args.impls.split(","):
                steps = args.steps or (3 if config_name == "cpu-small" else 1)
                spec = {"config_name": config_name, "support": support, "impl": impl,
                        "steps": steps, "batch": args.batch, "device_name": args.device}
                proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                                      capture_output=True, text=True, cwd=ROOT)
                if proc.returncode != 0:
                    tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                    print(f"{config_name} S={support} {impl}: failed: {tail}", file=sys.stderr)
                    rows.append({**spec, "error": tail})
                    continue
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(f"done: {config_name} S={support} {impl}", file=sys.stderr)

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"training step ({args.batch} episode(s)/step, {args.device}, "
                        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
    for col in ("config", "support", "impl", "steps/s", "ms/step", "peak MiB",
                "data ms/step", "pairwise/fast"):
        table.add_column(col, justify="right")
    fast = {(r["config"], r["support"]): r for r in rows
            if r.get("impl") == "fast" and "error" not in r}
    for r in rows:
        if "error" in r:
            table.add_row(r["config_name"], str(r["support"]), r["impl"], "error", "-", "-",
                          "-", "-")
            continue
        f = fast.get((r["config"], r["support"]))
        speed = f"{r['ms_per_step'] / f['ms_per_step']:.2f}x" if f and r is not f else ""
        table.add_row(r["config"], str(r["support"]), r["impl"], f"{r['steps_per_s']:.3f}",
                      f"{r['ms_per_step']:.0f}", f"{r['peak_mib']:.0f}",
                      f"{r['data_ms_per_step']:.0f}", speed)
    Console(width=140).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": "training", "platform": platform.platform(),
               "python": platform.python_version(), "batch": args.batch, "rows": rows}
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
