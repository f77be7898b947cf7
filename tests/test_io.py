"""incontext.io: reading every supported format, atomic writes, listing, support discovery."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from incontext.io import (
    ImageReadError,
    OutputExistsError,
    atomic_write,
    list_image_files,
    load_image,
    probe_ndim,
    read_image,
    read_nifti,
    strip_image_suffix,
    write_nifti_like,
    write_png,
)
from incontext.io.supports import find_support_pairs, load_support, parse_support_arg


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".gif", ".jpg"])
def test_raster_formats_grey_and_colour_to_one_channel(tmp_path, suffix):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (12, 15, 3), dtype=np.uint8)
    path = tmp_path / f"im{suffix}"
    Image.fromarray(rgb).save(path)
    grey = read_image(path)
    assert grey.shape == (12, 15)
    if suffix in (".png", ".bmp", ".tif"):  # lossless: exact luma
        expected = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        np.testing.assert_allclose(grey, expected, atol=1e-3)


def test_16bit_tiff_keeps_values(tmp_path):
    data = np.arange(20 * 10, dtype=np.uint16).reshape(20, 10) * 300
    Image.fromarray(data).save(tmp_path / "a.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif"), data)


def test_palette_label_keeps_indices_and_colour_label_errors(tmp_path):
    lab = np.zeros((8, 8), np.uint8)
    lab[2:5, 2:5] = 1
    lab[5:7, 5:7] = 2
    img = Image.fromarray(lab, mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    img.save(tmp_path / "pal.png")
    np.testing.assert_array_equal(read_image(tmp_path / "pal.png", as_label=True), lab)
    grey_rgb = np.repeat((lab * 100)[..., None], 3, -1)
    Image.fromarray(grey_rgb).save(tmp_path / "greyrgb.png")
    np.testing.assert_array_equal(read_image(tmp_path / "greyrgb.png", as_label=True), lab * 100)
    colour = grey_rgb.copy()
    colour[..., 0] = 7
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(ImageReadError, match="colour.png"):
        read_image(tmp_path / "colour.png", as_label=True)


def test_unreadable_and_missing_files_name_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(ImageReadError, match="bad.png"):
        load_image(tmp_path / "bad.png")
    (tmp_path / "bad.nii.gz").write_bytes(b"nope")
    with pytest.raises(ImageReadError, match="bad.nii.gz"):
        load_image(tmp_path / "bad.nii.gz")
    with pytest.raises(ImageReadError, match="missing.png: file not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "x.xyz").write_bytes(b"")
    with pytest.raises(ImageReadError, match="x.xyz: unsupported"):
        load_image(tmp_path / "x.xyz")


def test_nifti_round_trip_keeps_grid_and_resets_scaling(tmp_path):
    aff = np.array([[0.0, -0.7, 0.1, 12.0], [1.3, 0.0, 0.0, -40.0], [0.0, 0.02, 3.0, 7.5],
                    [0, 0, 0, 1]])
    data = np.random.default_rng(1).integers(-1000, 1000, (9, 11, 5)).astype(np.int16)
    img = nib.Nifti1Image(data, aff)
    img.header.set_qform(aff, code=1)
    img.header.set_sform(aff, code=4)
    img.header.set_slope_inter(0.5, -3.0)
    img.header["descrip"] = b"scanner X"
    nib.save(img, str(tmp_path / "in.nii.gz"))
    ref = read_nifti(tmp_path / "in.nii.gz")
    assert ref.data.shape == (9, 11, 5) and ref.spatial_ndim == 3
    label = (ref.data > 0).astype(np.uint8) * 3
    write_nifti_like(tmp_path / "out.nii.gz", label, ref, dtype=np.uint8)
    out = nib.load(str(tmp_path / "out.nii.gz"))
    src = nib.load(str(tmp_path / "in.nii.gz"))
    np.testing.assert_array_equal(out.affine, src.affine)
    for key in ("qform_code", "sform_code", "pixdim", "descrip", "srow_x", "quatern_c", "dim"):
        np.testing.assert_array_equal(out.header[key], src.header[key], err_msg=key)
    assert out.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(out.dataobj), label)  # no scaling applied


def test_nifti_trailing_singleton_axes(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((6, 7, 1), np.float32), np.eye(4)), str(tmp_path / "a.nii"))
    nib.save(nib.Nifti1Image(np.ones((6, 7, 4, 1), np.float32), np.eye(4)),
             str(tmp_path / "b.nii"))
    assert load_image(tmp_path / "a.nii").data.shape == (6, 7)
    assert probe_ndim(tmp_path / "a.nii") == 2
    assert load_image(tmp_path / "b.nii").data.shape == (6, 7, 4)
    assert probe_ndim(tmp_path / "b.nii") == 3
    ref = read_nifti(tmp_path / "a.nii")
    write_nifti_like(tmp_path / "o.nii.gz", np.zeros((6, 7, 1), np.uint8), ref)
    assert nib.load(str(tmp_path / "o.nii.gz")).shape == (6, 7, 1)
    nib.save(nib.Nifti1Image(np.ones((3, 3, 3, 2), np.float32), np.eye(4)),
             str(tmp_path / "c.nii"))
    with pytest.raises(ImageReadError, match="c.nii"):
        read_nifti(tmp_path / "c.nii")


def test_writes_are_atomic_and_never_overwrite(tmp_path):
    path = tmp_path / "m.png"
    write_png(path, np.full((4, 5), 2, np.uint8))
    with pytest.raises(OutputExistsError, match="m.png"):
        write_png(path, np.zeros((4, 5), np.uint8))
    assert np.asarray(Image.open(path)).max() == 2
    write_png(path, np.zeros((4, 5), np.uint8), overwrite=True)
    assert np.asarray(Image.open(path)).max() == 0

    def failing(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "f.png", failing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png"]


def test_write_png_16bit_labels(tmp_path):
    lab = np.array([[0, 300], [1, 65535]], np.int64)
    write_png(tmp_path / "l.png", lab)
    np.testing.assert_array_equal(read_image(tmp_path / "l.png", as_label=True), lab)
    with pytest.raises(ValueError, match="l2.png"):
        write_png(tmp_path / "l2.png", np.array([[-1, 2]]))


def test_list_image_files(tmp_path):
    for name in ("b.png", "a.jpg", "notes.txt", "meta.json", ".hidden.png"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_image_files(tmp_path)] == ["a.jpg", "b.png"]
    assert [p.name for p in list_image_files(str(tmp_path / "*.png"))] == ["b.png"]
    (tmp_path / "c.nii.gz").write_bytes(b"")
    with pytest.raises(ImageReadError, match="mixed formats"):
        list_image_files(tmp_path)
    (tmp_path / "c.nii.gz").unlink()
    (tmp_path / "d.docx").write_bytes(b"")
    with pytest.raises(ImageReadError, match="d.docx"):
        list_image_files(tmp_path)
    with pytest.raises(ImageReadError, match="matches no files"):
        list_image_files(str(tmp_path / "*.bmp"))
    assert strip_image_suffix("x_0000.nii.gz") == "x_0000"


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_support_folder_layouts(tmp_path):
    img = np.zeros((6, 6), np.uint8)
    _save(tmp_path / "a" / "images" / "x1.png", img)
    _save(tmp_path / "a" / "images" / "x2.png", img)
    _save(tmp_path / "a" / "images" / "x3.png", img)
    _save(tmp_path / "a" / "masks" / "x1_mask.png", img)
    _save(tmp_path / "a" / "masks" / "x2.png", img)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pairs = find_support_pairs(tmp_path / "a")
    assert [(p.image.name, p.label.name) for p in pairs] == [("x1.png", "x1_mask.png"),
                                                             ("x2.png", "x2.png")]
    assert any("x3.png" in str(w.message) for w in caught)

    root = tmp_path / "nn" / "Dataset002_X"
    for case in ("c1", "c2"):
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)),
                 str(_mk(root / "imagesTr") / f"{case}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)),
                 str(_mk(root / "labelsTr") / f"{case}.nii.gz"))
    pairs = find_support_pairs(tmp_path / "nn")  # the folder above a Dataset* folder works too
    assert [p.label.name for p in pairs] == ["c1.nii.gz", "c2.nii.gz"]
    with pytest.raises(ImageReadError, match="images/ and labels/"):
        find_support_pairs(tmp_path / "a" / "masks")


def _mk(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_parse_support_arg_and_load_support_checks(tmp_path):
    _save(tmp_path / "i.png", np.zeros((6, 6), np.uint8))
    _save(tmp_path / "l.png", np.zeros((6, 5), np.uint8))
    pair = parse_support_arg(f"{tmp_path}/i.png:{tmp_path}/l.png")
    assert pair.label.name == "l.png"
    with pytest.raises(ImageReadError, match="l.png: label shape"):
        load_support(pair)
    with pytest.raises(ImageReadError, match="nothere.png"):
        parse_support_arg(f"{tmp_path}/i.png:{tmp_path}/nothere.png")
    with pytest.raises(ImageReadError, match="IMAGE:LABEL"):
        parse_support_arg("just-one-file.png")
    lab = np.zeros((4, 4, 4), np.float32)
    lab[1, 1, 1] = 0.5
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), str(tmp_path / "v.nii"))
    nib.save(nib.Nifti1Image(lab, np.eye(4)), str(tmp_path / "vl.nii"))
    with pytest.raises(ImageReadError, match="vl.nii: label values are not integers"):
        load_support(parse_support_arg(f"{tmp_path}/v.nii:{tmp_path}/vl.nii"))


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    umask = os.umask(0)
    os.umask(umask)
    path = write_png(tmp_path / "p.png", np.zeros((2, 2), np.uint8))
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
