"""benchmarks/support_dice.py and method_gate.py: the support-set check as an estimate, and
a gate between the model and training-free baselines, on tasks with known answers."""

import json

import numpy as np
import pytest
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
    bad = sd.run_task(EchoQuery(32), _task(inverted=True), support_size=6, repeats=2,
                      refine="off")
    assert all(r["estimate"] < 0.1 and r["query"] < 0.1 for r in bad)
    assert not any(r["refined"] for r in bad)
    # by default the pixel head learns the inversion, and its estimate says so
    fixed = sd.run_task(EchoQuery(32), _task(inverted=True), support_size=6, repeats=2)
    assert all(r["refined"] and r["estimate"] > 0.8 and r["query"] > 0.8 for r in fixed)


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


def test_refine_gate_rows_score_the_head_and_the_model_on_the_same_draws():
    rg = load_script("refine_gate")
    # the mean support label misses discs that move; the head reads them off the image
    rows = rg.run_task(MeanSupportLabel(32), _task(), support_size=6, repeats=2)
    assert len(rows) == 2
    for row in rows:
        scored = rg.variants(row)
        assert scored["always"] > row["model"] + 0.3 and max(row["head_cv"].values()) > 0.8
        assert scored["gcut@0"] == row["head"][max(
            row["head_cv"], key=lambda t: (round(row["head_cv"][t], 6),
                                           -abs(float(t) - 0.5)))]
        assert scored["oracle"] >= max(scored["model"], scored["always"])
    # a model already exact keeps its task at every margin
    (row,) = rg.run_task(EchoQuery(32), _task(), support_size=6, repeats=1)
    assert row["model"] == pytest.approx(1.0) and row["model_loo"] == pytest.approx(1.0)
    assert all(v == row["model"] for k, v in rg.variants(row).items() if "@" in k)


def test_model_choice_picks_the_model_that_segments_the_supports_best():
    mc = load_script("model_choice")
    models = {"default": MeanSupportLabel(32), "other": EchoQuery(32)}
    rows = mc.run_task(models, _task(), support_size=6, repeats=2, margin=0.01)
    for row in rows:
        assert row["estimates"]["other"] > row["estimates"]["default"]
        assert row["picked"] == "other" and row["choose"] == row["models"]["other"]
        assert 0.0 <= row["mean"] <= 1.0
    # a margin larger than any gain keeps the first (default) model
    rows = mc.run_task(models, _task(), support_size=6, repeats=1, margin=1.0)
    assert rows[0]["picked"] == "default"


def test_volume_check_script_on_a_generated_nnunet_dataset(tmp_path):
    import json

    import nibabel as nib
    import torch

    from incontext.models import UniverSeg, save

    root = tmp_path / "Dataset001_Toy"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:10, :12, :12]
    for i in range(4):
        c = rng.integers(4, 8, 3)
        label = (((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) <= 9).astype(np.uint8)
        image = (label * 100 + rng.normal(0, 5, label.shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / "imagesTr" / f"c{i}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / f"c{i}.nii.gz")
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save(UniverSeg(encoder_widths=(8, 8), resolution=16), weights)
    out = tmp_path / "vc.json"
    vc = load_script("volume_check")
    assert vc.main([str(root), "--model", str(weights), "--supports", "2", "--queries", "2",
                    "--draws", "2", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert len(data["rows"]) == 2
    for row in data["rows"]:
        assert len(row["per_query"]) == len(row["per_query_at_cut"]) == 2
        assert row["queries"] == pytest.approx(np.mean(row["per_query"]))
        assert row["queries_at_cut"] == pytest.approx(np.mean(row["per_query_at_cut"]))
        assert row["estimate"] == pytest.approx(row["cut_scores"]["0.5"])
        assert row["estimate_at_cut"] == pytest.approx(row["cut_scores"][str(row["cut"])])
        assert not set(row["supports"]) & set(row["query_files"])


class _EchoUNet:
    """A 'trained' U-Net stand-in: predicts each query's own image (exact on the toy task)."""

    def predict(self, support_images, support_labels, query_images, *, seed):
        assert support_images.shape[0] == support_labels.shape[0] >= 1
        return query_images.astype(np.float32)


def test_unet_gate_hands_a_task_to_the_unet_when_it_segments_held_out_supports_better():
    ug = load_script("unet_gate")
    parts = ug.fold_parts(6, 4, seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(6)) and len(parts) == 4
    rows = ug.run_task(MeanSupportLabel(32), _EchoUNet(), _task(), support_size=6, repeats=2,
                       folds=3)
    assert len(rows) == 2
    for row in rows:
        assert row["support"]["unet"] > row["support"]["model"] + 0.1
        assert ug.gate(row, margin=0.05) == "unet" and ug.gate(row, margin=1.0) == "model"
        assert row["query"]["unet"] == pytest.approx(1.0)
    # the model keeps a task it segments as well as the U-Net
    rows = ug.run_task(EchoQuery(32), _EchoUNet(), _task(), support_size=6, repeats=1, folds=3)
    assert ug.gate(rows[0], margin=0.0) == "model"
    # an earlier run's U-Net scores are reused without training one
    earlier = {0: {"support": {"unet": 0.25}, "query": {"unet": 0.5}}}
    again = ug.run_task(EchoQuery(32), None, _task(), support_size=6, repeats=1, folds=3,
                        unet_rows=earlier)
    assert again[0]["support"]["unet"] == 0.25 and again[0]["query"]["unet"] == 0.5
    assert again[0]["support"]["model"] == rows[0]["support"]["model"]
    # fixed choices score the same toy task; a U-Net at another size sees resized images
    fixed = ug.run_task(EchoQuery(32), _EchoUNet(), _task(), support_size=6, repeats=1,
                        folds=3, fixed=True)
    assert fixed[0]["support"]["model"] == pytest.approx(rows[0]["support"]["model"])

    class SizeSpy(_EchoUNet):
        def predict(self, support_images, support_labels, query_images, *, seed):
            assert support_images.shape[-1] == query_images.shape[-1] == 16
            assert set(np.unique(support_labels)) <= {0.0, 1.0}
            return super().predict(support_images, support_labels, query_images, seed=seed)

    small = ug.run_task(EchoQuery(32), SizeSpy(), _task(), support_size=6, repeats=1, folds=3,
                        unet_size=16)
    assert 0.5 < small[0]["query"]["unet"] < 1.0  # the resized echo is close, not exact


def test_unet_gate_refuses_unet_scores_of_another_recipe(tmp_path, capsys):
    ug = load_script("unet_gate")
    setup = {"support_size": 16, "repeats": 2, "queries_per_task": 16, "folds": 4,
             "unet_steps": 100, "unet_size": None, "query_split": "val"}
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps(setup))  # no unet_prior_bias: a run before session 20
    with pytest.raises(SystemExit):
        ug.main(["--index", str(tmp_path / "none.h5"), "--unet-from", str(earlier)])
    assert "unet_prior_bias" in capsys.readouterr().err
    earlier.write_text(json.dumps({**setup, "unet_prior_bias": True}))
    with pytest.raises(SystemExit):
        ug.main(["--index", str(tmp_path / "none.h5"), "--unet-from", str(earlier),
                 "--no-prior-bias"])
    assert "unet_prior_bias" in capsys.readouterr().err


def test_dataset_table_averages_tasks_then_datasets(capsys):
    dataset_table = load_script("pool_tasks").dataset_table
    results = {"a/1": {"dataset": "a", "scores": {"m": 0.2, "g": 0.4}},
               "a/2": {"dataset": "a", "scores": {"m": 0.4, "g": 0.4}},
               "b/1": {"dataset": "b", "scores": {"m": 0.9, "g": 0.6}}}
    by_dataset, mean = dataset_table(results)
    assert by_dataset["a"]["m"] == pytest.approx(30.0) and by_dataset["b"]["g"] == pytest.approx(60)
    assert mean == pytest.approx({"m": 60.0, "g": 50.0})  # datasets weigh equally
    assert "| m | 30.0 | 90.0 | 60.00 |" in capsys.readouterr().out


def test_refine_variants_score_every_head_and_choose_post_processing_on_the_supports():
    import torch

    from incontext.models.universeg import UniverSeg

    rv = load_script("refine_variants")
    torch.manual_seed(0)  # a tiny untrained network: its output is noise, the image is not
    model = UniverSeg(encoder_widths=(4, 4), decoder_widths=(4,), resolution=32).eval()
    with torch.inference_mode():
        (row,) = rv.run_task(model, _task(), support_size=6, repeats=1)
    for name in rv.VARIANTS:  # every head, deep features included, reads the discs off the image
        assert row[f"{name}-always"] > 0.8 > row["model"]
        assert row[name] in (row[f"{name}-always"], row["model"])
    assert set(row["post_supports"]) == set(rv.POST) == set(row["post_queries"])
    # post-processing is applied only where it segments the supports better than none
    row["post_queries"] = {"none": 0.1, "largest": 0.2, "fill": 0.3, "largest+fill": 0.4}
    row["post_supports"] = {"none": 0.5, "largest": 0.7, "fill": 0.6, "largest+fill": 0.4}
    assert rv.scores_of(row)["base+post"] == 0.2
    row["post_supports"] = {"none": 0.7, "largest": 0.7, "fill": 0.6, "largest+fill": 0.4}
    assert rv.scores_of(row)["base+post"] == 0.1
    # pick: the head with the higher 2-fold Dice on the supports, if it beats the model's
    row.update({"base_cv": 0.6, "scales_cv": 0.7, "model_loo": 0.5, "model": 0.1,
                "base-always": 0.2, "scales-always": 0.3})
    assert rv.scores_of(row)["pick"] == 0.3
    row["scales_cv"] = 0.55
    assert rv.scores_of(row)["pick"] == 0.2
    row["model_loo"] = 0.65
    assert rv.scores_of(row)["pick"] == 0.1
    assert "base_cv" not in rv.scores_of(row)


def test_refine_gate_alternatives_replace_the_model_only_where_the_supports_say_so():
    rg = load_script("refine_gate")
    # the mean support label misses moving discs; a grey-level cut of the image is exact
    rows = rg.run_task(MeanSupportLabel(32), _task(), support_size=6, repeats=2,
                       alternatives=("threshold", "prototype"))
    for row in rows:
        alts = row["alternatives"]
        assert set(alts) == {"threshold", "prototype"}
        assert alts["threshold"]["loo"] > 0.95 and alts["threshold"]["query"] > 0.95
        scored = rg.variants(row)
        assert scored["threshold"] == alts["threshold"]["query"]
        assert scored["alt@0"] == scored["gcut@0"]  # the head is exact here too: no switch
    # the gate: the best alternative on the supports, if it beats model and head by > m
    row = {"model": 0.5, "model_loo": 0.6, "head_cv": {"0.5": 0.7}, "head": {"0.5": 0.65},
           "alternatives": {"threshold": {"loo": 0.78, "query": 0.9},
                            "prototype": {"loo": 0.74, "query": 0.95}}}
    scored = rg.variants(row)
    assert scored["gcut@0"] == 0.65
    assert scored["alt@0"] == scored["alt@0.05"] == 0.9  # threshold: best loo, +0.08
    assert scored["alt@0.1"] == 0.65
    # an exact model is never replaced
    (row,) = rg.run_task(EchoQuery(32), _task(), support_size=6, repeats=1,
                         alternatives=("threshold",))
    scored = rg.variants(row)
    assert all(scored[f"alt@{m:g}"] == scored["gcut@0"] for m in rg.ALT_MARGINS)


def test_remap_task_passes_every_image_through_one_curve_and_keeps_the_labels():
    pt = load_script("pool_tasks")
    task = _task(n_pool=5, n_query=2)
    task.pool_images[:] = np.linspace(0, 1, 32, dtype=np.float32)[None, None, :]
    task.query_images[:] = np.linspace(0, 1, 32, dtype=np.float32)[None, None, :]
    task.pool_colour = np.zeros((5, 3, 32, 32), np.float32)
    out = pt.remap_task(task, seed=0)
    assert out.pool_colour is None and out.query_colour is None  # grey only
    np.testing.assert_array_equal(out.pool_labels, task.pool_labels)
    np.testing.assert_array_equal(out.query_labels, task.query_labels)
    assert out.pool_images.dtype == np.float32 and 0 <= out.pool_images.min() <= 1
    # the same grey value maps to the same value in supports and queries
    np.testing.assert_array_equal(out.pool_images[0], out.query_images[0])
    assert not np.allclose(out.pool_images, task.pool_images)
    np.testing.assert_array_equal(out.pool_images, pt.remap_task(task, seed=0).pool_images)
    assert not np.allclose(out.pool_images, pt.remap_task(task, seed=1).pool_images)
    curve = pt.remap_curve(3)
    xs = np.linspace(0, 1, 6)
    assert np.all((curve(xs) >= 0) & (curve(xs) <= 1))


def test_support_groups_average_the_groups_probabilities():
    sg = load_script("support_groups")
    # the mean support label of two equal halves, averaged, is the mean label of all
    rows = sg.run_task(MeanSupportLabel(32), _task(n_pool=8), support_size=8, repeats=1,
                       groups=[1, 2, 4])
    (row,) = rows
    assert row["groups=1"] == pytest.approx(row["groups=2"]) == pytest.approx(row["groups=4"])
    rows = sg.run_task(EchoQuery(32), _task(n_pool=8), support_size=6, repeats=2, groups=[1, 3])
    assert len(rows) == 2 and all(r["groups=1"] > 0.95 and r["groups=3"] > 0.95 for r in rows)
