"""Generic-layout recipes (png-pairs, nifti-pairs, nnunet, msd) and the recipe registry."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from data_recipes import available_recipes, get_recipe
from data_recipes.base import RecipeError
from incontext.data.fixtures import write_msd, write_nifti_pairs, write_nnunet, write_png_pairs


def test_registry_finds_generic_recipes_and_rejects_unknown():
    names = available_recipes()
    for name in ("png-pairs", "nifti-pairs", "nnunet", "msd"):
        assert name in names
        assert get_recipe(name).name == name
    assert get_recipe("png_pairs") is get_recipe("png-pairs")
    with pytest.raises(RecipeError, match="unknown recipe 'no-such'.*png-pairs"):
        get_recipe("no-such")
    with pytest.raises(RecipeError, match="unknown option"):
        get_recipe("png-pairs", {"not_an_option": 1})


def test_registry_loads_module_attr_names():
    recipe = get_recipe("data_recipes.png_pairs:RECIPE", {"dataset": "x"})
    assert recipe.dataset == "x"


def test_png_pairs_binary(tmp_path):
    src = write_png_pairs(tmp_path / "src", n=4, mask_suffix="_mask")
    recipe = get_recipe("png-pairs", {"mask_suffix": "_mask", "dataset": "toy"})
    info = recipe.describe(src)
    assert (info.name, info.dims, info.label_names) == ("toy", 2, ["foreground"])
    refs = recipe.subjects(src)
    assert [r.subject_id for r in refs] == [f"case_{i:03d}" for i in range(4)]
    subject = recipe.load(refs[0])
    assert subject.image.ndim == 2  # colour converted to grey
    raw = np.asarray(Image.open(refs[0].paths["mask"]))
    np.testing.assert_array_equal(subject.masks["foreground"], raw == 255)


def test_png_pairs_label_map_and_unexpected_values(tmp_path):
    src = write_png_pairs(tmp_path / "src", n=3, n_labels=2, rgb=False)
    recipe = get_recipe("png-pairs", {"labels": {"1": "a", "2": "b"}})
    assert recipe.describe(src).label_names == ["a", "b"]
    ref = recipe.subjects(src)[0]
    subject = recipe.load(ref)
    raw = np.asarray(Image.open(ref.paths["mask"]))
    np.testing.assert_array_equal(subject.masks["b"], raw == 2)
    # label 2 not declared -> unexpected value, naming the mask file
    only_a = get_recipe("png-pairs", {"labels": {"a": 1}})
    with pytest.raises(RecipeError, match=r"case_000\.png.*unexpected label values \[2\]"):
        only_a.load(ref)
    # binary mode refuses a 0/1/2 label map
    with pytest.raises(RecipeError, match="unexpected mask values"):
        get_recipe("png-pairs").load(ref)


def test_png_pairs_missing_mask_is_reported_at_load(tmp_path):
    src = write_png_pairs(tmp_path / "src", n=2)
    (src / "masks" / "case_001.png").unlink()
    recipe = get_recipe("png-pairs")
    refs = recipe.subjects(src)
    assert len(refs) == 2
    with pytest.raises(RecipeError, match=r"case_001\.png: file not found"):
        recipe.load(refs[1])


def test_png_pairs_finds_a_labels_folder_too(tmp_path):
    src = write_png_pairs(tmp_path / "src", n=2)
    masks = [p.name for p in sorted((src / "masks").iterdir())]
    (src / "masks").rename(src / "labels")  # segment --support-dir's other layout
    recipe = get_recipe("png-pairs")
    refs = recipe.subjects(src)
    assert [r.paths["mask"].parent.name for r in refs] == ["labels"] * 2
    assert sorted(r.paths["mask"].name for r in refs) == masks
    assert recipe.load(refs[0]).masks
    (src / "labels").rename(src / "gt")
    with pytest.raises(RecipeError, match="no masks/ or labels/ folder"):
        recipe.subjects(src)
    named = get_recipe("png-pairs", {"masks": "gt"})
    assert len(named.subjects(src)) == 2


def test_png_pairs_sub_datasets_from_folders(tmp_path):
    for sub in ("siteA", "siteB"):
        write_png_pairs(tmp_path / "tmp" / sub, n=2)
        for kind in ("images", "masks"):
            (tmp_path / "src" / kind).mkdir(parents=True, exist_ok=True)
            (tmp_path / "tmp" / sub / kind).rename(tmp_path / "src" / kind / sub)
    recipe = get_recipe("png-pairs", {"sub_dataset_from_folders": True})
    refs = recipe.subjects(tmp_path / "src")
    assert sorted({r.sub_dataset for r in refs}) == ["siteA", "siteB"]
    assert all(r.subject_id.startswith(r.sub_dataset + "/") for r in refs)


def test_nifti_pairs(tmp_path):
    src = write_nifti_pairs(tmp_path / "src", n=3, image_suffix="_0000")
    recipe = get_recipe("nifti-pairs", {"image_suffix": "_0000", "labels": {"a": 1, "b": 2}})
    refs = recipe.subjects(src)
    assert [r.subject_id for r in refs] == ["s00", "s01", "s02"]
    subject = recipe.load(refs[0])
    assert subject.image.shape == (10, 12, 8)
    assert subject.spacing == pytest.approx((0.8, 0.8, 1.5))
    assert set(subject.masks) == {"a", "b"} and subject.masks["a"].dtype == bool


def test_nnunet_reads_dataset_json(tmp_path):
    ds = write_nnunet(tmp_path, n=3, channel="CT")
    recipe = get_recipe("nnunet")
    for source in (ds, tmp_path):  # the dataset folder or its parent
        info = recipe.describe(source)
        assert info.modality == "ct" and info.modality_name == "CT"
        assert info.label_names == ["liver", "tumour"] and info.dims == 3
        assert info.name == "toy"
    refs = recipe.subjects(tmp_path)
    assert [r.subject_id for r in refs] == ["toy_000", "toy_001", "toy_002"]
    subject = recipe.load(refs[1])
    assert subject.spacing == pytest.approx((1.5, 1.0, 2.0))
    assert subject.masks["tumour"].shape == subject.image.shape


@pytest.mark.parametrize(("channel", "expected"), [("MRI", "mr"), ("T2", "mr"), ("FLAIR", "mr"),
                                                   ("CT", "ct"), ("noNorm", "other")])
def test_nnunet_modality_from_channel_names(tmp_path, channel, expected):
    write_nnunet(tmp_path, n=1, channel=channel)
    assert get_recipe("nnunet").describe(tmp_path).modality == expected


def test_nnunet_bad_dataset_json(tmp_path):
    ds = write_nnunet(tmp_path, n=1)
    (ds / "dataset.json").write_text("{not json")
    with pytest.raises(RecipeError, match=r"dataset\.json: cannot read JSON"):
        get_recipe("nnunet").describe(ds)
    (ds / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "x": 1}}))
    with pytest.raises(RecipeError, match="missing 'channel_names'"):
        get_recipe("nnunet").describe(ds)


def test_msd_multichannel(tmp_path):
    ds = write_msd(tmp_path, n=2)
    recipe = get_recipe("msd", {"channel": 1})
    info = recipe.describe(ds)
    assert info.label_names == ["edema", "tumour"]
    assert info.modality == "mr" and info.modality_name == "T1w"
    refs = recipe.subjects(ds)
    s0 = get_recipe("msd").load(refs[0])
    s1 = recipe.load(refs[0])
    assert s1.image.shape == (12, 12, 8)
    np.testing.assert_allclose(s1.image, 2 * s0.image, rtol=1e-5)
