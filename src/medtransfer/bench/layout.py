"""Where brainshift writes what: dataset folder names, label sets, file names, metadata columns.

```
OUT/
  metadata.csv                              every case of every dataset (with a ``dataset`` column; ``head``
                                            last when the build's heads are not just colin27)
  Dataset001_BrainExtraction/               nnU-Net raw: dataset.json, imagesTr/, labelsTr/, metadata.csv
      labelsTr_1mm/{case}.nii.gz            exact ground truth on the 1 mm grid (surface metrics at 1 mm)
      montage_<domain>.png, montage_task.png
  Dataset002_Anatomy/  Dataset003_MSLesion/  Dataset004_StrokeLesion/   (same structure)
  sources/                                  mri_classification.npz, natural_*.npz (see docs/brainshift.md)
```
"""

from __future__ import annotations

from dataclasses import dataclass

from .simulate import ANATOMY_LABELS, Cohort, Target

LABELS_1MM = "labelsTr_1mm"
METADATA_COLUMNS = (
    "case",
    "subject",
    "domain",
    "profile",
    "vendor",
    "field_strength",
    "cohort",
    "spacing_mm",
    "lesion_volume_mm3",
    "territory",
    "hemisphere",
    "orientation",
)
HEAD_COLUMN = "head"  # a last column, written only by builds with heads other than Colin27 alone


@dataclass(frozen=True)
class DatasetSpec:
    """One nnU-Net dataset of the benchmark."""

    target: Target
    folder: str
    cohort: Cohort
    labels: dict[str, int]
    description: str


DATASETS: dict[str, DatasetSpec] = {
    Target.BRAIN_EXTRACTION: DatasetSpec(
        Target.BRAIN_EXTRACTION,
        "Dataset001_BrainExtraction",
        Cohort.HEALTHY,
        {"background": 0, "brain": 1},
        "brainshift brain extraction: T1 heads with skull from six simulated scanners; brain = filled Colin27 "
        "ch2bet mask under each subject's deformation",
    ),
    Target.ANATOMY: DatasetSpec(
        Target.ANATOMY,
        "Dataset002_Anatomy",
        Cohort.HEALTHY,
        dict(ANATOMY_LABELS),
        "brainshift anatomy: CSF, grey and white matter (intensity classes of Colin27), deep grey and cerebellum (AAL)",
    ),
    Target.MS_LESION: DatasetSpec(
        Target.MS_LESION,
        "Dataset003_MSLesion",
        Cohort.MS,
        {"background": 0, "lesion": 1},
        "brainshift MS-like lesions: 0-20 small irregular hypointense white-matter lesions per subject",
    ),
    Target.STROKE_LESION: DatasetSpec(
        Target.STROKE_LESION,
        "Dataset004_StrokeLesion",
        Cohort.STROKE,
        {"background": 0, "lesion": 1},
        "brainshift stroke-like lesions: one irregular lesion in one hemisphere's MCA/ACA/PCA territory (AAL)",
    ),
}
