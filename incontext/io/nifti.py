"""NIfTI volumes with nibabel: read with geometry, write outputs on the query's exact grid."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from incontext.io.errors import ImageReadError
from incontext.io.files import atomic_write


@dataclass
class NiftiImage:
    """A NIfTI file's voxels and geometry.

    data:   the voxel array with scaling applied and trailing singleton axes beyond
            the third removed (so (X, Y, Z, 1) -> (X, Y, Z) and (X, Y, 1) stays)
    affine: 4x4 voxel-to-world matrix (nibabel's best affine)
    header: the original header (a copy; outputs are written with it)
    shape:  the on-disk shape
    """

    path: Path
    data: np.ndarray
    affine: np.ndarray
    header: object
    shape: tuple[int, ...]

    @property
    def spatial_ndim(self) -> int:
        """2 for (X, Y) or (X, Y, 1) images, else 3."""
        shape = self.data.shape
        return 2 if len(shape) == 2 or (len(shape) == 3 and shape[2] == 1) else len(shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        zooms = self.header.get_zooms()  # type: ignore[attr-defined]
        return tuple(float(z) for z in zooms[: self.data.ndim])


def read_nifti(path: str | os.PathLike) -> NiftiImage:
    """Read a .nii/.nii.gz file; errors name the file."""
    import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: file not found")
    if not path.is_file():
        raise ImageReadError(f"{path}: not a file")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=np.float64)
        header = img.header.copy()
    except Exception as exc:  # nibabel raises many types (ImageFileError, EOFError, zlib...)
        raise ImageReadError(f"{path}: cannot read NIfTI ({type(exc).__name__}: {exc})") from None
    shape = tuple(int(s) for s in data.shape)
    if data.size == 0:
        raise ImageReadError(f"{path}: empty image {shape}")
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 3:
        raise ImageReadError(f"{path}: {data.ndim}D image {shape}; give one 2D or 3D image "
                             "(split multi-channel or time series first)")
    if data.ndim < 2:
        raise ImageReadError(f"{path}: {data.ndim}D image {shape}; expected 2D or 3D")
    return NiftiImage(path=path, data=data, affine=affine, header=header, shape=shape)


def write_nifti_like(path: str | os.PathLike, data: np.ndarray, reference: NiftiImage, *,
                     dtype: np.dtype | type | None = None, overwrite: bool = False) -> Path:
    """Write ``data`` on ``reference``'s grid: same header, affine, qform/sform and units.

    ``data`` has the reference's spatial shape (any trailing singleton axes of the
    reference are restored) optionally followed by one extra axis (e.g. per label).
    The header's data type is set to ``dtype`` (default: ``data.dtype``) and intensity
    scaling is reset, so label values are stored exactly.
    """
    import nibabel as nib

    path = Path(path)
    data = np.asarray(data)
    spatial = reference.data.shape
    if data.shape[: len(spatial)] != spatial or data.ndim > len(spatial) + 1:
        raise ValueError(f"{path}: data shape {data.shape} does not fit the reference "
                         f"{reference.path.name} {spatial}")
    if data.ndim == len(spatial):
        data = data.reshape(reference.shape)
    dtype = np.dtype(dtype or data.dtype)
    header = reference.header.copy()  # type: ignore[attr-defined]
    header.set_data_dtype(dtype)
    header.set_slope_inter(1.0, 0.0)
    cls = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    img = cls(np.ascontiguousarray(data.astype(dtype, copy=False)), None, header=header)
    # affine=None keeps the reference's qform/sform (and codes) untouched.
    img.header.set_slope_inter(1.0, 0.0)

    def write(tmp: Path) -> None:
        nib.save(img, str(tmp))

    return atomic_write(path, write, overwrite=overwrite)
