"""Held-out benchmark: protocol fairness, cache reuse, aggregation order, end-to-end outputs."""

from __future__ import annotations

import argparse
import builtins
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from incontext.baselines import get_baseline
from incontext.benchmark import (
    BenchmarkConfig,
    BenchmarkResults,
    Row,
    TaskData,
    ensemble_members,
    load_task,
    run_benchmark,
    support_draws,
)
from incontext.benchmark.protocol import ProtocolError
from incontext.benchmark.runner import make_row, score_draw
from incontext.data import TaskIndex, build_index
from incontext.data.fixtures import write_png_pairs

SHARED = Path(os.environ.get("INCONTEXT_SHARED_DATA",
                             Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


class Spy:
    """Wraps a method; records a digest of every input it is given."""

    def __init__(self, inner, name: str | None = None) -> None:
        self.inner = inner
        self.name = name or inner.name
        self.calls: list[dict] = []
        self.ensembles = getattr(inner, "ensembles", False)

    def predict(self, support_images, support_labels, query_images, *, seed):
        self.calls.append({"supports": _digest(support_images),
                           "labels": _digest(support_labels),
                           "queries": _digest(query_images), "seed": seed,
                           "n": int(support_images.shape[0])})
        return self.inner.predict(support_images, support_labels, query_images, seed=seed)

    def describe(self):
        return {**self.inner.describe(), "name": self.name}


@pytest.fixture(scope="module")
def index_paths(tmp_path_factory) -> list[Path]:
    """Two tiny indexes: 'one' (1 task, 15 subjects) and 'two' (2 label tasks, 10 subjects)."""
    root = tmp_path_factory.mktemp("bench")
    one = write_png_pairs(root / "one", n=15, seed=1, rgb=False)
    two = write_png_pairs(root / "two", n=10, seed=2, n_labels=2, rgb=False)
    build_index("png-pairs", one, root / "one.h5", size=16, progress=False,
                recipe_options={"dataset": "one"})
    build_index("png-pairs", two, root / "two.h5", size=16, progress=False,
                recipe_options={"dataset": "two", "labels": {"1": "inner", "2": "outer"}})
    return [root / "one.h5", root / "two.h5"]


# ------------------------------------------------------------------------------- protocol

def test_draws_seeded_per_task_and_size_and_pool_limited():
    a = support_draws("t", pool_size=20, support_size=4, repeats=3, seed=0)
    b = support_draws("t", pool_size=20, support_size=4, repeats=3, seed=0)
    assert [d.indices.tolist() for d in a] == [d.indices.tolist() for d in b]
    assert len(a) == 3 and all(d.indices.size == 4 and not d.pool_limited for d in a)
    assert len({tuple(d.indices) for d in a}) == 3  # independent draws differ
    assert all(len(set(d.indices.tolist())) == 4 for d in a)  # without replacement
    other = support_draws("u", pool_size=20, support_size=4, repeats=3, seed=0)
    assert [d.indices.tolist() for d in other] != [d.indices.tolist() for d in a]
    limited = support_draws("t", pool_size=5, support_size=8, repeats=3, seed=0)
    assert len(limited) == 1 and limited[0].pool_limited
    assert limited[0].indices.tolist() == list(range(5))


def test_ensemble_members_start_with_the_draw():
    (draw,) = support_draws("t", pool_size=30, support_size=5, repeats=1, seed=3)
    members = ensemble_members(draw, 30, 4)
    assert len(members) == 4 and members[0].tolist() == draw.indices.tolist()
    assert all(m.size == 5 for m in members) and len({tuple(m) for m in members}) == 4
    (limited,) = support_draws("t", pool_size=4, support_size=5, repeats=2, seed=3)
    assert len(ensemble_members(limited, 4, 4)) == 1


def test_load_task_splits_and_query_cap(index_paths):
    with TaskIndex.open(index_paths) as index:
        data = load_task(index, "one/2d/foreground")
        _, _, train_ids = index.load_split("one/2d/foreground", "train")
        _, _, test_ids = index.load_split("one/2d/foreground", "test")
        assert data.pool_subjects == train_ids and data.query_subjects == test_ids
        assert not set(train_ids) & set(test_ids)
        capped = load_task(index, "one/2d/foreground", queries_per_task=2, seed=5)
        assert capped.n_queries == 2 and capped.total_queries == data.n_queries
        assert set(capped.query_subjects) <= set(test_ids)
        again = load_task(index, "one/2d/foreground", queries_per_task=2, seed=5)
        assert again.query_subjects == capped.query_subjects
        # --query-split val: the val split's subjects, the same support pool
        _, _, val_ids = index.load_split("one/2d/foreground", "val")
        val = load_task(index, "one/2d/foreground", query_split="val")
        assert val_ids and val.query_subjects == val_ids and val.pool_subjects == train_ids
        with pytest.raises(ProtocolError, match="query split"):
            load_task(index, "one/2d/foreground", query_split="train")


def test_query_split_val_end_to_end(index_paths, tmp_path):
    kw = dict(model="none", baselines="threshold", support_sizes=[2], repeats=1,
              progress=False, plots=False)
    test = run_benchmark(index_paths, out_dir=tmp_path, **kw)
    val = run_benchmark(index_paths, out_dir=tmp_path, query_split="val", **kw)
    assert val.computed_rows == 3 and val.cached_rows == 0  # cached test rows not reused
    with TaskIndex.open(index_paths) as index:
        _, _, val_ids = index.load_split("one/2d/foreground", "val")
    row = next(r for r in val.rows if r.task == "one/2d/foreground")
    assert row.queries == len(val_ids) and test.computed_rows == 3
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["protocol"]["query_split"] == "val" and saved["config"]["query_split"] == "val"
    assert "queries from its val split" in (tmp_path / "report.md").read_text()
    with pytest.raises(ValueError, match="query_split"):
        run_benchmark(index_paths, out_dir=tmp_path, query_split="train", **kw)


def test_every_method_sees_the_same_supports_and_queries(index_paths, tmp_path):
    spies = [Spy(get_baseline("mean-label")), Spy(get_baseline("threshold")),
             Spy(get_baseline("nearest-support"))]
    run_benchmark(index_paths, model="none", baselines=None, methods=spies,
                  support_sizes=[1, 3, 16], repeats=3, out_dir=tmp_path, progress=False,
                  plots=False, seed=7)
    reference = spies[0].calls
    assert len(reference) == 3 * (3 + 3 + 1)  # 3 tasks; N=16 exceeds every pool: one draw
    for spy in spies[1:]:
        assert spy.calls == reference
    # the supports are pool slices, the queries the whole test split
    with TaskIndex.open(index_paths) as index:
        data = load_task(index, "one/2d/foreground")
        pool = {_digest(data.pool_images[i:i + 1]) for i in range(data.pool_size)}
        first = next(c for c in reference if c["n"] == 1 and c["queries"] == _digest(
            data.query_images))
        assert first["supports"] in pool
    # repeats are different support sets with different seeds
    n3 = [c for c in reference if c["n"] == 3][:3]
    assert len({c["supports"] for c in n3}) == 3 and len({c["seed"] for c in n3}) == 3
    # a different seed gives different draws
    spy = Spy(get_baseline("mean-label"))
    run_benchmark(index_paths, model="none", baselines=None, methods=[spy], support_sizes=[3],
                  repeats=3, progress=False, plots=False, seed=8)
    seed7 = [c["supports"] for c in reference if c["n"] == 3]
    assert len(spy.calls) == len(seed7) == 9
    assert [c["supports"] for c in spy.calls] != seed7


def test_model_member_zero_sees_the_baselines_supports(index_paths, tmp_path):
    from incontext.benchmark import ModelMethod
    from incontext.models import load_model

    model = Spy(ModelMethod(load_model(str(_tiny_model(tmp_path / "m.safetensors"))),
                            name="tiny"))
    base = Spy(get_baseline("mean-label"))
    results = run_benchmark(index_paths[0], model="none", baselines=None, methods=[model, base],
                            support_sizes=[2, 64], ensembles=[1, 3], repeats=2,
                            progress=False, plots=False)
    # N=2: 2 draws x 3 members; N=64 (pool of 9): one draw, one member
    assert len(model.calls) == 2 * 3 + 1 and len(base.calls) == 2 + 1
    assert [model.calls[i] for i in (0, 3, 6)] == base.calls
    extra = [model.calls[i]["supports"] for i in (1, 2)]
    assert model.calls[0]["supports"] not in extra and extra[0] != extra[1]
    rows = {(r.method, r.support_size, r.ensemble): r for r in results.rows}
    assert rows[("tiny", 2, 3)].members == 3 and rows[("tiny", 64, 3)].members == 1
    assert rows[("tiny", 2, 3)].seconds > rows[("tiny", 2, 1)].seconds


# ------------------------------------------------------------------------------- cache

def test_rerun_reuses_finished_rows(index_paths, tmp_path):
    def run(spy, sizes):
        return run_benchmark(index_paths, model="none", baselines=None, methods=[spy],
                             support_sizes=sizes, repeats=2, out_dir=tmp_path, progress=False,
                             plots=False)

    first_spy = Spy(get_baseline("threshold"))
    first = run(first_spy, [1, 2])
    assert len(first_spy.calls) > 0 and first.computed_rows == 6 and first.cached_rows == 0
    second_spy = Spy(get_baseline("threshold"))
    second = run(second_spy, [1, 2])
    assert second_spy.calls == [] and second.cached_rows == 6 and second.computed_rows == 0
    assert [r.to_dict() for r in second.rows] == [r.to_dict() for r in first.rows]
    third_spy = Spy(get_baseline("threshold"))
    third = run(third_spy, [1, 2, 4])  # only the new support size is computed
    assert third.computed_rows == 3 and {c["n"] for c in third_spy.calls} == {4}
    # changed settings are a different row: recomputed, not reused
    sigma_spy = Spy(get_baseline("threshold", sigmas=(0.0,)))
    changed = run(sigma_spy, [1])
    assert changed.computed_rows == 3 and sigma_spy.calls
    # a damaged cache file is recomputed
    victim = sorted((tmp_path / "cache").glob("*-N1-K1-*.json"))[0]
    victim.write_text("{not json")
    fourth_spy = Spy(get_baseline("threshold"))
    fourth = run(fourth_spy, [1, 2, 4])
    assert fourth.computed_rows == 1 and len(fourth_spy.calls) == 2


# ------------------------------------------------------------------------------- aggregation

def _task(name: str, dataset: str, labels: np.ndarray) -> TaskData:
    q = labels.shape[0]
    return TaskData(name=name, dataset=dataset, pool_images=np.zeros((4, 4, 4), np.float32),
                    pool_labels=np.zeros((4, 4, 4), np.float32), pool_subjects=list("abcd"),
                    query_images=np.zeros_like(labels), query_labels=labels,
                    query_subjects=[f"q{i}" for i in range(q)], query_spacing=None,
                    total_queries=q)


def test_aggregation_queries_then_draws_then_tasks_then_datasets():
    full = np.zeros((4, 4), np.float32)
    full[1:3, 1:3] = 1
    half = np.zeros((4, 4), np.float32)
    half[1:3, 1:2] = 1  # Dice(half, full) = 2*2/(2+4) = 2/3
    empty = np.zeros((4, 4), np.float32)
    # task a (dataset X): 3 queries, targets full, full, empty
    a = _task("x/a", "X", np.stack([full, full, empty]))
    draw1 = score_draw(np.stack([full, half, empty]), a)  # 1, 2/3, empty-empty 1
    draw2 = score_draw(np.stack([empty, full, full]), a)  # 0, 1, 0
    assert draw1["dice"].tolist() == pytest.approx([1, 2 / 3, 1])
    draws = support_draws("x/a", 10, 2, 2)
    row_a = make_row("m", a, 2, 1, draws, 1, [draw1, draw2], seconds=1.0)
    m1, m2 = (1 + 2 / 3 + 1) / 3, (0 + 1 + 0) / 3
    assert row_a.dice_mean == pytest.approx((m1 + m2) / 2)  # mean over draws of query means
    assert row_a.dice_std == pytest.approx(abs(m1 - m2) / 2)
    assert row_a.empty_empty == 1 and row_a.empty_targets == 1
    assert row_a.hd95_undefined == 3  # the empty-empty query, the missed one, the false one
    assert row_a.seconds_per_query == pytest.approx(1.0 / 6)
    # task b (dataset X): 1 query, perfect; task c (dataset Y): 1 query, Dice 0
    b = _task("x/b", "X", full[None])
    row_b = make_row("m", b, 2, 1, draws[:1], 1, [score_draw(full[None], b)], 1.0)
    c = _task("y/c", "Y", full[None])
    row_c = make_row("m", c, 2, 1, draws[:1], 1, [score_draw(empty[None], c)], 1.0)
    config = BenchmarkConfig([2], [1], 2, {}, None, 0)
    results = BenchmarkResults(rows=[row_a, row_b, row_c], config=config, methods={},
                               indexes=[])
    x = (row_a.dice_mean + 1.0) / 2  # tasks weigh the same, whatever their query count
    assert results.dice("m", 2, "X") == pytest.approx(x)
    assert results.dice("m", 2, "Y") == 0.0
    assert results.dice("m", 2) == pytest.approx((x + 0.0) / 2)  # datasets weigh the same
    pooled_tasks = (row_a.dice_mean + 1.0 + 0.0) / 3
    assert results.dice("m", 2) != pytest.approx(pooled_tasks)


def test_rows_round_trip_through_json():
    row = Row(method="m", dataset="d", task="d/t", support_size=1, ensemble=1, draws=1,
              support_used=1, pool_size=3, pool_limited=False, members=1, queries=2,
              dice_mean=0.5, dice_std=0.0, iou_mean=0.4, hd95_px=float("nan"), hd95_mm=None,
              hd95_undefined=2, empty_targets=0, empty_empty=0, seconds=0.1,
              seconds_per_query=0.05, draw_dice=[0.5])
    assert Row(**json.loads(json.dumps(row.to_dict()))).task == "d/t"


# ------------------------------------------------------------------------------- end to end

def _tiny_model(path: Path) -> Path:
    import torch

    from incontext.models import UniverSeg, UniverSegConfig, save

    torch.manual_seed(0)
    # resolution 8 < index size 16: exercises the resizing in and out of the model
    return save(UniverSeg(UniverSegConfig(encoder_widths=(4, 4), resolution=8)), path)


def test_end_to_end_with_model_and_all_baselines(index_paths, tmp_path):
    from incontext.cli.benchmark import register

    weights = _tiny_model(tmp_path / "tiny.safetensors")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    out = tmp_path / "out"
    args = parser.parse_args([
        "benchmark", "--index", str(index_paths[0]), "--index", str(index_paths[1]),
        "--model", str(weights), "--support-sizes", "1,4", "--ensembles", "1,3",
        "--repeats", "2", "--method-repeats", "supervised-unet=1",
        "--baseline-option", "supervised-unet.steps=2", "--queries-per-task", "2",
        "--method-repeats", "supervised-unet-rgb=1",
        "--baseline-option", "supervised-unet-rgb.steps=2",
        "--out", str(out), "--no-progress"])
    assert args.func(args) == 0
    data = json.loads((out / "results.json").read_text())
    methods = set(data["methods"])
    assert methods == {"tiny", "supervised-unet", "supervised-unet-rgb", "nearest-support",
                       "mean-label", "threshold", "prototype", "pixel-classifier"}
    rows = data["rows"]
    # 3 tasks x (7 baselines x 2 sizes + model x 2 sizes x 2 ensembles)
    assert len(rows) == 3 * (7 * 2 + 2 * 2)
    assert {r["ensemble"] for r in rows if r["method"] == "tiny"} == {1, 3}
    assert {r["ensemble"] for r in rows if r["method"] != "tiny"} == {1}
    assert all(r["queries"] <= 2 for r in rows)
    assert {r["draws"] for r in rows if r["method"] == "supervised-unet"} == {1}
    assert data["methods"]["supervised-unet"]["steps"] == 2
    assert all(0.0 <= r["dice_mean"] <= 1.0 for r in rows)
    assert {h["datasets"] for h in data["headline"]} == {2}
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("method,ensemble,dataset,task,support_size")
    assert len(csv_lines) == 1 + len(rows)
    report = (out / "report.md").read_text()
    assert "Dice ×100 at N = 4" in report and "mean-label" in report
    # --device auto: recorded with the run, not in the rows' cache keys
    from incontext.device import resolve_device

    where = str(resolve_device("auto"))
    assert data["run"]["model_device"] == where and f"the model ran on `{where}`" in report
    assert data["run"]["baseline_device"] == where
    assert f"the U-Net baselines trained on `{where}`" in report
    assert all("device" not in desc for desc in data["methods"].values())
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    for name in ("dice_vs_support.png", "dataset_bars.png", "overlays.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in report


def test_reports_without_matplotlib(index_paths, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("no matplotlib here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    run_benchmark(index_paths[0], model="none", baselines="mean-label", support_sizes=[1],
                  repeats=1, out_dir=tmp_path, progress=False)
    assert {p.name for p in tmp_path.iterdir()} >= {"results.json", "results.csv", "report.md"}
    assert not list(tmp_path.glob("*.png"))
    assert "Plots skipped" in (tmp_path / "report.md").read_text()


def test_default_model_missing_runs_baselines_with_note(index_paths, monkeypatch):
    from incontext.models import registry

    monkeypatch.setattr(registry, "DEFAULT_MODEL", None)
    results = run_benchmark(index_paths[0], baselines="mean-label", support_sizes=[1],
                            repeats=1, progress=False)
    assert list(results.methods) == ["mean-label"]
    assert any("no default model" in note for note in results.notes)
    assert results.to_dict()["run"]["model_device"] is None
    assert results.to_dict()["run"]["baseline_device"] is None  # no U-Net baseline ran


def test_bad_arguments_are_clear(index_paths):
    with pytest.raises(ValueError, match="unknown baseline"):
        run_benchmark(index_paths[0], model="none", baselines="nope", progress=False)
    with pytest.raises(ValueError, match="nothing to benchmark"):
        run_benchmark(index_paths[0], model="none", baselines="none", progress=False)
    with pytest.raises(ValueError, match="no task matches"):
        run_benchmark(index_paths[0], model="none", baselines="mean-label", tasks=["zzz*"],
                      progress=False)
    with pytest.raises(ValueError, match="support_sizes"):
        run_benchmark(index_paths[0], model="none", baselines="mean-label",
                      support_sizes=[0], progress=False)


@pytest.mark.skipif(not (SHARED / "heldout" / "kvasir_mini").exists(),
                    reason="shared held-out data not available")
def test_real_heldout_task(tmp_path):
    out = build_index("kvasir_mini", SHARED / "heldout" / "kvasir_mini", tmp_path / "k.h5",
                      size=32, progress=False)
    assert out.built > 0
    spy = Spy(get_baseline("mean-label"))
    results = run_benchmark(tmp_path / "k.h5", model="none", baselines="threshold",
                            methods=[spy], support_sizes=[2, 64], repeats=2, progress=False)
    with TaskIndex.open(tmp_path / "k.h5") as index:
        task = index.tasks[0].name
        _, _, train_ids = index.load_split(task, "train")
        _, _, test_ids = index.load_split(task, "test")
    assert not set(train_ids) & set(test_ids)
    big = [r for r in results.rows if r.support_size == 64]
    assert all(r.pool_limited and r.draws == 1 and r.support_used == len(train_ids)
               for r in big)
    assert all(r.queries == len(test_ids) for r in results.rows)


def test_hd95_in_mm_when_the_index_records_spacing(index_paths, tmp_path):
    from incontext.data.fixtures import write_nnunet

    ds = write_nnunet(tmp_path / "raw", n=8, shape=(12, 10, 9), spacing=(2.0, 2.0, 2.0))
    build_index("nnunet", ds, tmp_path / "vol.h5", size=16, progress=False)
    results = run_benchmark(tmp_path / "vol.h5", model="none", baselines="mean-label",
                            tasks=["*/axis2/liver"], support_sizes=[2], repeats=1,
                            progress=False)
    (row,) = results.rows
    assert row.hd95_mm is not None and np.isfinite(row.hd95_mm)
    assert row.hd95_mm > row.hd95_px  # mm per pixel at size 16 exceeds 1 here
    # png-pairs indexes record no spacing: mm stays empty
    flat = run_benchmark(index_paths[0], model="none", baselines="mean-label",
                         support_sizes=[2], repeats=1, progress=False)
    assert all(r.hd95_mm is None for r in flat.rows)


def test_new_weights_at_the_same_path_are_not_served_from_the_cache(index_paths, tmp_path):
    import torch

    from incontext.models import UniverSeg, UniverSegConfig, save

    weights = tmp_path / "w.safetensors"

    def run():
        return run_benchmark(index_paths[0], model=str(weights), baselines=None,
                             support_sizes=[1], ensembles=[1], repeats=1, out_dir=tmp_path,
                             progress=False, plots=False)

    _tiny_model(weights)
    assert run().computed_rows == 1
    assert run().computed_rows == 0
    torch.manual_seed(1)
    save(UniverSeg(UniverSegConfig(encoder_widths=(4, 4), resolution=8)), weights)
    assert run().computed_rows == 1


def test_evaluation_masks_are_not_benchmarked_by_default():
    from types import SimpleNamespace

    from incontext.benchmark.api import select_tasks

    class FakeIndex:
        tasks = [SimpleNamespace(name="drive/2d/vessel", dataset="drive", label="vessel"),
                 SimpleNamespace(name="drive/2d/field of view", dataset="drive",
                                 label="field of view"),
                 SimpleNamespace(name="wbc/2d/nucleus", dataset="wbc", label="nucleus")]

        def dataset_attrs(self, dataset):
            if dataset == "drive":
                return {"extra": '{"evaluation_mask": "field of view"}'}
            return {"extra": "{}"}

    assert select_tasks(FakeIndex(), None) == ["drive/2d/vessel", "wbc/2d/nucleus"]
    assert select_tasks(FakeIndex(), ["drive/*"]) == ["drive/2d/vessel", "drive/2d/field of view"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error for a missing GPU")
def test_baseline_device_goes_to_the_unet_baselines_only():
    from incontext.benchmark.methods import make_baselines
    from incontext.device import DeviceError

    with pytest.raises(DeviceError, match="CUDA is not available"):
        make_baselines(["threshold", "supervised-unet"], device="cuda")
    # the cheap baselines take no device; a baseline's own setting wins over the default
    made = make_baselines(["threshold", "supervised-unet"],
                          {"supervised-unet": {"device": "cpu"}}, device="cuda")
    assert [m.name for m in made] == ["threshold", "supervised-unet"]
    assert str(made[1].device) == "cpu"
