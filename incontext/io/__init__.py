"""Reading and writing the user's image files: 2D rasters (PNG, JPEG, BMP, TIFF, GIF) and NIfTI.

Readers raise :class:`ImageReadError` naming the file; writers are atomic (temporary
file + rename) and refuse to replace an existing file unless ``overwrite=True``.
"""

from incontext.io.errors import ImageReadError, OutputExistsError
from incontext.io.files import (
    IMAGE_SUFFIXES,
    NIFTI_SUFFIXES,
    atomic_write,
    file_kind,
    list_image_files,
    strip_image_suffix,
)
from incontext.io.images import read_image, write_png
from incontext.io.loading import LoadedImage, load_image, probe_ndim, require_finite
from incontext.io.nifti import NiftiImage, read_nifti, write_nifti_like

__all__ = [
    "IMAGE_SUFFIXES",
    "NIFTI_SUFFIXES",
    "ImageReadError",
    "LoadedImage",
    "NiftiImage",
    "OutputExistsError",
    "atomic_write",
    "file_kind",
    "list_image_files",
    "load_image",
    "probe_ndim",
    "read_image",
    "read_nifti",
    "require_finite",
    "strip_image_suffix",
    "write_nifti_like",
    "write_png",
]
