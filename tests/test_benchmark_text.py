"""TextDriven models in the held-out benchmark: text, examples and both as methods."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from incontext.benchmark import TaskData, load_task, run_benchmark
from incontext.benchmark.text_methods import TextPromptMethod, text_prompt_methods
from incontext.data import TaskIndex, build_index
from incontext.data.fixtures import write_png_pairs
from incontext.models import save
from incontext.models.text_driven import TextDriven, TextDrivenConfig

torch.set_num_threads(1)
SMALL = dict(widths=(8, 16), norm_groups=4, resolution=16, text_dim=24, embed_dim=16,
             text_encoder="hashing", text_encoder_options={"dim": 24})


def small_model(seed: int = 0, **kw) -> TextDriven:
    torch.manual_seed(seed)
    return TextDriven(TextDrivenConfig(**{**SMALL, **kw})).eval()


def task(label: str = "lesion", size: int = 20, seed: int = 0) -> TaskData:
    rng = np.random.default_rng(seed)
    img = rng.random((9, size, size)).astype(np.float32)
    lab = (img > 0.6).astype(np.float32)
    return TaskData(name=f"d/2d/{label}", dataset="d", pool_images=img[:4],
                    pool_labels=lab[:4], pool_subjects=list("abcd"), query_images=img[4:],
                    query_labels=lab[4:], query_subjects=list("efghi"), query_spacing=None,
                    total_queries=5, label=label, modality_name="ultrasound")


def test_modes_use_what_they_should():
    model = small_model()
    t, other = task("lesion"), task("nucleus")
    sup_a = (t.pool_images[:2], t.pool_labels[:2])
    sup_b = (t.pool_images[2:], 1 - t.pool_labels[2:])
    out = {}
    for mode in ("text", "examples", "both"):
        m = TextPromptMethod(model, mode)
        m.set_task(t)
        a = m.predict(*sup_a, t.query_images, seed=0)
        b = m.predict(*sup_b, t.query_images, seed=0)
        m.set_task(other)
        c = m.predict(*sup_a, t.query_images, seed=0)
        assert a.shape == t.query_images.shape and a.dtype == np.float32
        assert 0 <= a.min() and a.max() <= 1
        out[mode] = (a, b, c)
    a, b, c = out["text"]
    np.testing.assert_array_equal(a, b)  # text only: supports unused
    assert not np.allclose(a, c)  # ... and the label name matters
    a, b, c = out["examples"]
    assert not np.allclose(a, b)  # examples only: supports matter
    np.testing.assert_array_equal(a, c)  # ... and the name does not
    a, b, c = out["both"]
    assert not np.allclose(a, b) and not np.allclose(a, c)


def test_bad_use_is_clear():
    model = small_model()
    with pytest.raises(ValueError, match="unknown text prompting mode"):
        TextPromptMethod(model, "words")
    with pytest.raises(ValueError, match="hybrid"):
        TextPromptMethod(small_model(hybrid=False), "both")
    with pytest.raises(TypeError, match="TextDriven"):
        TextPromptMethod(torch.nn.Linear(2, 2), "text")
    m = TextPromptMethod(model, "text")
    t = task()
    with pytest.raises(RuntimeError, match="set_task"):
        m.predict(t.pool_images, t.pool_labels, t.query_images, seed=0)
    with pytest.raises(ValueError, match="mode"):
        text_prompt_methods(model, "")


def test_benchmark_runs_every_mode_with_the_task_prompt(tmp_path):
    root = write_png_pairs(tmp_path / "two", n=10, seed=2, n_labels=2, rgb=False)
    build_index("png-pairs", root, tmp_path / "two.h5", size=16, progress=False,
                recipe_options={"dataset": "two", "labels": {"1": "inner", "2": "outer"}})
    weights = save(small_model(), tmp_path / "td.safetensors")
    methods = text_prompt_methods(weights, "all")
    assert [m.name for m in methods] == ["td:text", "td:examples", "td:both"]
    results = run_benchmark(tmp_path / "two.h5", model="none", baselines="mean-label",
                            support_sizes=[2], ensembles=[1], repeats=2, methods=methods,
                            progress=False, plots=False)
    got = {(r.method, r.task) for r in results.rows}
    tasks = {r.task for r in results.rows}
    assert len(tasks) == 2
    assert got == {(m, t) for m in ("td:text", "td:examples", "td:both", "mean-label")
                   for t in tasks}
    with TaskIndex.open(tmp_path / "two.h5") as index:
        data = load_task(index, sorted(tasks)[0])
    assert data.label in ("inner", "outer")
    # the last task prompted is the one the method saw last
    assert methods[0].prompt.endswith(f"image of a {sorted(tasks)[-1].split('/')[-1]}")


def test_cli_text_model(tmp_path, capsys):
    from incontext.cli import main

    root = write_png_pairs(tmp_path / "one", n=8, seed=1, rgb=False)
    build_index("png-pairs", root, tmp_path / "one.h5", size=16, progress=False,
                recipe_options={"dataset": "one"})
    weights = save(small_model(), tmp_path / "td.safetensors")
    out = tmp_path / "bench"
    rc = main(["benchmark", "--index", str(tmp_path / "one.h5"), "--model", "none",
               "--baselines", "none", "--text-model", str(weights), "--text-modes",
               "text,both", "--support-sizes", "2", "--ensembles", "1", "--repeats", "1",
               "--out", str(out), "--no-plots", "--no-progress"])
    assert rc == 0
    methods = {r["method"] for r in __import__("json").loads(
        (out / "results.json").read_text())["rows"]}
    assert methods == {"td:text", "td:both"}
    assert main(["benchmark", "--index", str(tmp_path / "one.h5"), "--model", "none",
                 "--text-model", str(tmp_path / "missing.safetensors")]) == 2
    assert "no such file" in capsys.readouterr().err
