"""TextDriven: dynamic heads, partial-label masking, hybrid prompts, I/O, segment_text, training."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from incontext.models import load, save
from incontext.models.text_driven import (
    TextDriven,
    TextDrivenConfig,
    dynamic_head_forward,
    dynamic_head_loop,
    dynamic_head_param_count,
)
from incontext.text.train import (
    MultiLabelData,
    TextTrainConfig,
    evaluate,
    load_config,
    partial_label_loss,
    train,
)
from incontext.text_segment import add_text_arguments, run_text_segmentation, segment_text

torch.set_num_threads(1)
SMALL = dict(widths=(8, 16, 32), norm_groups=4, resolution=32, text_dim=24, embed_dim=16,
             text_encoder="hashing", text_encoder_options={"dim": 24})


def small_model(seed: int = 0, **kw) -> TextDriven:
    torch.manual_seed(seed)
    return TextDriven(TextDrivenConfig(**{**SMALL, **kw})).eval()


def shapes(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images with a bright circle (class 0) and a dimmer square (class 1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = rng.normal(0.2, 0.05, (n, size, size)).astype(np.float32)
    masks = np.zeros((n, 2, size, size), np.uint8)
    for i in range(n):
        if rng.random() < 0.8:
            r = rng.uniform(3, 7)
            cy, cx = rng.uniform(r, size - r, 2)
            masks[i, 0] = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        if rng.random() < 0.8:
            h = int(rng.integers(4, 10))
            y, x = rng.integers(0, size - h, 2)
            masks[i, 1, y:y + h, x:x + h] = 1
        images[i][masks[i, 1] > 0] = 0.5
        images[i][masks[i, 0] > 0] = 0.9
    return np.clip(images, 0, 1), masks


# ----------------------------------------------------------------------------- dynamic head

def test_dynamic_head_has_153_parameters_per_class():
    assert dynamic_head_param_count(8, 3) == (64 + 8) + (64 + 8) + (8 + 1) == 153
    model = TextDriven(TextDrivenConfig(widths=(8, 16), norm_groups=4, resolution=32,
                                        text_dim=12))
    assert model.controller.out_channels == 153
    assert model.controller.in_channels == 3 * model.config.embed_dim  # image ‖ text ‖ support
    plain = TextDriven(TextDrivenConfig(widths=(8, 16), norm_groups=4, resolution=32,
                                        text_dim=12, hybrid=False))
    assert plain.controller.in_channels == 2 * 256
    x = torch.rand(2, 1, 32, 32)
    # the controller emits exactly 153 numbers per (image, class)
    seen = {}

    def record(module, inputs, output) -> None:
        seen["out"] = output.shape

    plain.controller.register_forward_hook(record)
    plain(x, torch.rand(5, 12))
    assert seen["out"] == (2 * 5, 153, 1, 1)


def test_grouped_heads_equal_a_per_class_loop():
    torch.manual_seed(0)
    feats = torch.randn(3, 8, 10, 12)
    params = torch.randn(3, 4, 153) * 0.5
    grouped = dynamic_head_forward(feats, params)
    looped = dynamic_head_loop(feats, params)
    assert grouped.shape == (3, 4, 10, 12)
    assert torch.allclose(grouped, looped, atol=1e-5)
    with pytest.raises(ValueError, match="153"):
        dynamic_head_forward(feats, params[..., :150])


def test_any_number_of_classes_and_classes_are_independent():
    model = small_model()
    x = torch.rand(2, 1, 32, 32)
    text = torch.randn(7, 24)
    with torch.no_grad():
        full = model(x, text)
        for k in (1, 3, 7):
            out = model(x, text[:k])
            assert out.shape == (2, k, 32, 32)
            assert torch.allclose(out, full[:, :k], atol=1e-5)
        per_image = model(x, text[None].expand(2, -1, -1))
    assert torch.allclose(per_image, full, atol=1e-5)


# ----------------------------------------------------------------------------- partial labels

def test_masked_classes_get_exactly_zero_gradient():
    model = small_model().train()
    x = torch.rand(2, 1, 32, 32)
    text = torch.randn(2, 3, 24, requires_grad=True)
    targets = (torch.rand(2, 3, 32, 32) > 0.7).float()
    annotated = torch.tensor([[True, False, True], [True, False, False]])
    loss = partial_label_loss(model(x, text), targets, annotated)
    loss.backward()
    assert torch.count_nonzero(text.grad[:, 1]) == 0
    assert torch.count_nonzero(text.grad[1, 2]) == 0
    assert torch.count_nonzero(text.grad[0, 0]) > 0 and torch.count_nonzero(text.grad[0, 2]) > 0


def test_partial_loss_ignores_unannotated_targets_and_handles_none():
    logits = torch.randn(2, 3, 8, 8)
    targets = (torch.rand(2, 3, 8, 8) > 0.5).float()
    annotated = torch.tensor([[True, False, True], [False, True, False]])
    other = targets.clone()
    other[~annotated] = 1 - other[~annotated]
    assert torch.equal(partial_label_loss(logits, targets, annotated),
                       partial_label_loss(logits, other, annotated))
    none = partial_label_loss(logits.requires_grad_(), targets, torch.zeros(2, 3, dtype=bool))
    assert float(none.detach()) == 0.0
    with pytest.raises(ValueError, match="shapes"):
        partial_label_loss(logits, targets[:, :2], annotated)


# ----------------------------------------------------------------------------- hybrid prompts

def test_text_only_support_only_and_both_work():
    model = small_model()
    x = torch.rand(2, 1, 32, 32)
    text = torch.randn(3, 24)
    s_img = torch.rand(2, 2, 1, 32, 32)
    s_lab = (torch.rand(2, 2, 3, 32, 32) > 0.8).float()
    with torch.no_grad():
        only_text = model(x, text)
        only_support = model(x, None, s_img, s_lab)
        both = model(x, text, s_img, s_lab)
        none_present = model(x, text, s_img, s_lab, text_present=torch.zeros(3, dtype=bool))
    for out in (only_text, only_support, both):
        assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()
    assert not torch.allclose(only_text, both)  # the examples change the heads
    assert torch.allclose(none_present, only_support, atol=1e-6)  # absent text = no text


def test_class_with_empty_support_labels_counts_as_no_support():
    model = small_model()
    x = torch.rand(1, 1, 32, 32)
    text = torch.randn(2, 24)
    s_img = torch.rand(1, 2, 1, 32, 32)
    s_lab = torch.zeros(1, 2, 2, 32, 32)
    s_lab[:, :, 0, 5:15, 5:15] = 1
    with torch.no_grad():
        with_support = model(x, text, s_img, s_lab)
        without = model(x, text)
    assert torch.allclose(with_support[:, 1], without[:, 1], atol=1e-6)
    assert not torch.allclose(with_support[:, 0], without[:, 0])


def test_bad_inputs_give_clear_errors():
    model = small_model()
    x = torch.rand(1, 1, 32, 32)
    with pytest.raises(ValueError, match="24"):
        model(x, torch.randn(2, 10))
    with pytest.raises(ValueError, match="divisible"):
        model(torch.rand(1, 1, 30, 30), torch.randn(2, 24))
    with pytest.raises(ValueError, match="hybrid=False"):
        small_model(hybrid=False)(x, None, torch.rand(1, 1, 1, 32, 32),
                                  torch.rand(1, 1, 2, 32, 32))
    with pytest.raises(ValueError, match="both"):
        model(x, torch.randn(2, 24), torch.rand(1, 1, 1, 32, 32))
    with pytest.raises(ValueError, match="unknown keys"):
        TextDrivenConfig.from_dict({"widths": [8], "bogus": 1})
    with pytest.raises(ValueError, match="divisible"):
        TextDrivenConfig(widths=(8, 16, 32), resolution=30)


# ----------------------------------------------------------------------------- I/O

def test_save_load_round_trip(tmp_path):
    model = small_model(seed=3)
    path = save(model, tmp_path / "td.safetensors")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["architecture"] == "text-driven"
    loaded = load(path)
    assert isinstance(loaded, TextDriven) and loaded.config == model.config
    x, text = torch.rand(1, 1, 32, 32), torch.randn(2, 24)
    with torch.no_grad():
        assert torch.equal(model(x, text), loaded(x, text))


# ----------------------------------------------------------------------------- segment_text

def test_segment_text_returns_maps_at_image_size():
    model = small_model()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 50)).astype(np.uint8), rng.random((32, 20, 3))]
    out = segment_text(model, images, ["circle", "square", "left lung"], modality_name="toy")
    assert len(out) == 2
    for res, img in zip(out, images, strict=True):
        assert res.mask.shape == img.shape[:2]
        assert res.probabilities.shape == (3, *img.shape[:2])
        assert set(np.unique(res.mask)) <= {0, 1, 2, 3}
        assert res.prompts[2] == "A toy image of a left lung"
    one = segment_text(model, images[0], "circle", modality_name="toy")
    np.testing.assert_allclose(one.probabilities[0], out[0].probabilities[0], atol=1e-6)
    emb = segment_text(model, images[0], np.random.default_rng(1).normal(size=(4, 24)))
    assert emb.probabilities.shape == (4, 40, 50)
    with pytest.raises(ValueError, match=r"\(K, 24\)"):
        segment_text(model, images[0], np.zeros((2, 5)))


def test_segment_text_with_examples_only():
    model = small_model()
    img, masks = shapes(3, seed=5)
    labels = masks[:, 0] + 2 * masks[:, 1] * (masks[:, 0] == 0)
    res = segment_text(model, img[0], [None, "square"], support_images=img[1:],
                       support_labels=labels[1:])
    assert res.probabilities.shape == (2, 32, 32)
    with pytest.raises(ValueError, match="support examples"):
        segment_text(model, img[0], [None])


def test_cli_writes_masks_and_class_table(tmp_path):
    from PIL import Image

    model = small_model()
    weights = save(model, tmp_path / "m.safetensors")
    for i in range(2):
        Image.fromarray((np.random.default_rng(i).random((36, 30)) * 255).astype(np.uint8)
                        ).save(tmp_path / f"img{i}.png")
    parser = argparse.ArgumentParser()
    add_text_arguments(parser, standalone=True)
    args = parser.parse_args([str(tmp_path / "img0.png"), str(tmp_path / "img1.png"),
                              "--model", str(weights), "--out", str(tmp_path / "out"),
                              "--text", "heart", "--text", "left lung",
                              "--save-probabilities",
                              "--embedding-cache", str(tmp_path / "emb.h5")])
    assert run_text_segmentation(args) == 0
    mask = np.asarray(Image.open(tmp_path / "out" / "img0.png"))
    assert mask.shape == (36, 30) and mask.max() <= 2
    assert np.load(tmp_path / "out" / "img1.npy").shape == (2, 36, 30)
    table = json.loads((tmp_path / "out" / "classes.json").read_text())
    assert [c["name"] for c in table["classes"]] == ["heart", "left lung"]
    assert (tmp_path / "emb.h5").exists()
    with pytest.raises(ValueError, match="exists already"):  # no silent overwrite
        run_text_segmentation(args)
    args.overwrite = True
    assert run_text_segmentation(args) == 0
    bad = parser.parse_args([str(tmp_path / "missing.png"), "--model", str(weights),
                             "--out", str(tmp_path / "o2"), "--text", "heart"])
    with pytest.raises(ValueError, match="missing.png"):
        run_text_segmentation(bad)


# ----------------------------------------------------------------------------- training

def test_short_partial_label_training_raises_validation_dice():
    images, masks = shapes(96, seed=0)
    val_images, val_masks = shapes(24, seed=1)
    # dataset A annotates circles only, dataset B squares only (both shapes occur in both)
    a = MultiLabelData.from_arrays(images[:48], masks[:48, :1], ["circle"], "synthetic", "A")
    b = MultiLabelData.from_arrays(images[48:], masks[48:, 1:], ["square"], "synthetic", "B")
    data = MultiLabelData.concat([a, b])
    assert data.annotated[:48].tolist() == [[True, False]] * 48
    val = MultiLabelData.from_arrays(val_images, val_masks, ["circle", "square"], "synthetic")
    model_cfg = TextDrivenConfig(widths=(8, 16, 32), norm_groups=4, resolution=32, text_dim=64,
                                 embed_dim=32, text_encoder_options={"dim": 64})
    cfg = TextTrainConfig(steps=120, batch_size=8, lr=3e-3, eval_every=40, seed=0)
    model, history = train(model_cfg, cfg, data, val, progress=False)
    first, last = history[0]["val_mean_dice"], max(h["val_mean_dice"] for h in history)
    assert history[0]["step"] == 0
    assert last > first + 0.3, [h["val_mean_dice"] for h in history]
    assert set(history[-1]["val_dice"]) == set(val.prompts)
    from incontext.text.train import embed_vocabulary

    text = embed_vocabulary(model_cfg, val.prompts)
    for mode in ("support", "both"):
        assert np.mean(list(evaluate(model, val, text, mode=mode).values())) > first


def test_cpu_config_parses():
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "configs" / "text-driven-cpu.toml"
    model_cfg, cfg = load_config(path)
    assert model_cfg.head_params == 153 and cfg.steps > 0


def test_config_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nstepz = 3\n")
    with pytest.raises(ValueError, match=r"bad.toml.*stepz"):
        load_config(bad)


def _write_tiny_index(path, n: int = 12) -> None:
    """A minimal two-label index file in the documented layout (generated shapes)."""
    import h5py

    from incontext.data.index_format import STR_DTYPE, json_attr, write_root_attrs

    images, masks = shapes(n, seed=7)
    with h5py.File(path, "w") as f:
        write_root_attrs(f)
        g = f.create_group("datasets/toy")
        g.attrs.update({"name": "toy", "modality": "other", "modality_name": "toy scan",
                        "label_names": json_attr(["circle", "square"]), "dims": 2,
                        "source": "generated", "citation": "", "license": "",
                        "preprocessing": json_attr({})})
        g.create_dataset("images", data=(images * 255).astype(np.uint8), chunks=(1, 32, 32))
        g.create_dataset("masks", data=masks)
        g.create_dataset("subject", data=[f"s{i}" for i in range(n)], dtype=STR_DTYPE)
        g.create_dataset("sub_dataset", data=[""] * n, dtype=STR_DTYPE)
        g.create_dataset("split", data=np.array([0] * (n - 4) + [1] * 4, np.uint8))
        g.create_dataset("plane", data=np.zeros(n, np.uint8))
        g.create_dataset("slice_index", data=np.zeros(n, np.int32))
        g.create_dataset("selected", data=np.ones((n, 3), bool))
        g.create_dataset("foreground", data=masks.reshape(n, 2, -1).sum(-1))
        g.create_dataset("orig_shape", data=np.ones((n, 3), np.int32))
        g.create_dataset("orig_spacing", data=np.ones((n, 3), np.float32))
        g.create_dataset("spacing", data=np.ones((n, 2), np.float32))


def test_train_command_on_an_index(tmp_path):
    from incontext.text.train import main

    index = tmp_path / "toy.h5"
    _write_tiny_index(index)
    val = MultiLabelData.from_index(index, "val")
    assert len(val) == 4 and val.prompts == ["A toy scan image of a circle",
                                             "A toy scan image of a square"]
    assert 0.0 <= val.images.min() and val.images.max() <= 1.0
    config = tmp_path / "c.toml"
    config.write_text('[model]\nwidths = [8, 16]\nnorm_groups = 4\nresolution = 32\n'
                      'text_dim = 32\nembed_dim = 16\ntext_encoder_options = { dim = 32 }\n'
                      '[train]\nsteps = 4\nbatch_size = 2\neval_every = 2\n'
                      f'embedding_cache = "{tmp_path / "emb.npz"}"\n')
    assert main([str(config), "--index", str(index), "--out", str(tmp_path / "run")]) == 0
    model = load(tmp_path / "run" / "model.safetensors")
    assert isinstance(model, TextDriven) and model.config.text_dim == 32
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["step"] for h in history] == [0, 2, 4]
    assert (tmp_path / "emb.npz").exists()
    with pytest.raises(ValueError, match="no slices"):
        MultiLabelData.from_index(index, "test")


def _toy_text_run(tmp_path: Path, steps: int, eval_every: int) -> tuple[Path, Path]:
    """A 2-label toy index at 32 px and a tiny TextDriven config: (index, config)."""
    from incontext.data import build_index
    from incontext.data.fixtures import write_png_pairs

    root = write_png_pairs(tmp_path / "src", n=8, seed=0, n_labels=2, rgb=False)
    build_index("png-pairs", root, tmp_path / "idx.h5", size=32, progress=False,
                recipe_options={"dataset": "toy", "labels": {"1": "inner", "2": "outer"}})
    config = tmp_path / "td.toml"
    config.write_text(
        '[model]\nwidths = [8, 16]\nnorm_groups = 4\nresolution = 32\ntext_dim = 24\n'
        'embed_dim = 16\ntext_encoder = "hashing"\ntext_encoder_options = { dim = 24 }\n'
        f'[train]\nsteps = {steps}\nbatch_size = 4\neval_every = {eval_every}\n')
    return tmp_path / "idx.h5", config


def test_incontext_train_runs_a_text_config_and_init_continues(tmp_path):
    from incontext.cli import main
    from incontext.models import load
    from incontext.text.train import is_text_config

    _, config = _toy_text_run(tmp_path, steps=6, eval_every=3)
    assert is_text_config(config)
    assert not is_text_config(Path(__file__).resolve().parents[1] / "configs"
                              / "incontext-universeg-s64.toml")
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--index", str(tmp_path / "idx.h5"),
                 "--out", str(out), "--no-progress"]) == 0
    for name in ("model.safetensors", "model.json", "history.json", "summary.json",
                 "config.json"):
        assert (out / name).exists(), name
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == [0, 3, 6]
    best = max(h["val_mean_dice"] for h in history)
    # continuing from the saved model starts where it ended: step 0 = its validation Dice
    out2 = tmp_path / "run2"
    from incontext.text.train import run_from_config

    run_from_config(config, index=[str(tmp_path / "idx.h5")], out=out2, progress=False,
                    init=str(out / "model.safetensors"))
    again = json.loads((out2 / "history.json").read_text())
    assert again[0]["val_mean_dice"] == pytest.approx(best, abs=1e-6)
    assert load(out2 / "model.safetensors").weights_meta["provenance"]["init"]
    bad = tmp_path / "bad.toml"
    bad.write_text(config.read_text().replace("embed_dim = 16", "embed_dim = 8"))
    with pytest.raises(ValueError, match="do not match"):
        run_from_config(bad, index=[str(tmp_path / "idx.h5")], out=tmp_path / "r3",
                        progress=False, init=str(out / "model.safetensors"))
    # a finished run directory is not overwritten by a new run
    assert main(["train", "--config", str(config), "--index", str(tmp_path / "idx.h5"),
                 "--out", str(out), "--no-progress"]) == 2


def test_text_training_resumes_exactly(tmp_path):
    from incontext.cli import main
    from incontext.text.train import run_from_config

    idx, config = _toy_text_run(tmp_path, steps=8, eval_every=2)
    index = [str(idx)]
    run_from_config(config, index=index, out=tmp_path / "whole", progress=False)
    run_from_config(config, index=index, out=tmp_path / "split", progress=False, stop_after=4)
    assert (tmp_path / "split" / "last-state.pt").exists()
    assert main(["train", "--resume", str(tmp_path / "split"), "--no-progress"]) == 0
    whole = json.loads((tmp_path / "whole" / "history.json").read_text())
    split = json.loads((tmp_path / "split" / "history.json").read_text())
    assert [h["step"] for h in split] == [h["step"] for h in whole] == [0, 2, 4, 6, 8]
    for a, b in zip(whole, split, strict=True):
        assert a["val_mean_dice"] == pytest.approx(b["val_mean_dice"], abs=1e-6)
    wa = load(tmp_path / "whole" / "model.safetensors").state_dict()
    wb = load(tmp_path / "split" / "model.safetensors").state_dict()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=1e-6, rtol=0)
    (tmp_path / "bad").mkdir()
    assert main(["train", "--resume", str(tmp_path / "bad"), "--no-progress"]) == 2


def test_a_shared_support_set_is_encoded_once_and_gives_the_same_logits():
    model = small_model()
    img, masks = shapes(5, seed=3)
    x = torch.from_numpy(img[:3, None])
    s_img = torch.from_numpy(img[3:, None])[None]  # (1, S, 1, H, W)
    s_lab = torch.from_numpy(masks[3:].astype(np.float32))[None]  # (1, S, K, H, W)
    text = torch.randn(masks.shape[1], model.config.text_dim)
    calls = []
    hook = model.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    shared = model(x, text, s_img, s_lab)
    hook.remove()
    assert calls == [3, 2]  # queries once, the 2 supports once (not 3 x 2)
    expanded = model(x, text, s_img.expand(3, -1, -1, -1, -1), s_lab.expand(3, -1, -1, -1, -1))
    torch.testing.assert_close(shared, expanded, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="1 or the batch"):
        model(x, text, s_img.expand(2, -1, -1, -1, -1), s_lab.expand(2, -1, -1, -1, -1))
