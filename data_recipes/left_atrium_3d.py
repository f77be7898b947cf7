"""Left atrium 3D LGE-MRI, an nnU-Net v2 raw dataset (``Dataset101_LeftAtrium``).

Delegates to the generic ``nnunet`` recipe (labels from ``dataset.json``:
``left_atrium``) and only adds the dataset facts. Each volume is one patient, so
the subject id is the nnU-Net case id. Images are ``round(1000 * z)`` int16 (z-scored
per volume), 1.25 mm isotropic; the affine is diagonal (RAS).
"""

from __future__ import annotations

from data_recipes.nnunet import NnUNetRecipe

RECIPE = NnUNetRecipe(
    name="left_atrium_3d",
    dataset="left_atrium_3d",
    modality="mr",
    modality_name="LGE MRI",
    source="2018 Atrial Segmentation Challenge (via antares0811/3DCardiac), 40 volumes",
    citation=(
        "Xiong et al., A global benchmark of algorithms for segmenting the left atrium from "
        "late gadolinium-enhanced cardiac MRI, Medical Image Analysis 67:101832, 2021"
    ),
    license="research use (challenge data)",
)
