from __future__ import annotations

import numpy as np

from medtransfer.bench.simulate import SimulatedCase
from medtransfer.bench.thumbnails import canonical_thumbnail


def _case(lesion: np.ndarray) -> SimulatedCase:
    image = np.zeros((10, 12, 14), np.float32)
    image[2:8, 3:9, 4:12] = 1.0  # the "head", off-centre along z
    return SimulatedCase(
        image=image,
        affine=np.eye(4),
        labels={"ms_lesion": lesion},
        labels_1mm={},
        affine_1mm=np.eye(4),
        region_1mm=np.zeros((1, 1, 1), np.uint8),
        info={},
    )


def test_case_without_lesions_centres_on_the_head():
    # an MS subject may have zero lesions: the montage must still find slices (it crashed with NaN before)
    thumb = canonical_thumbnail(_case(np.zeros((10, 12, 14), np.uint8)), ["ms_lesion"])
    assert thumb.axial.shape == (10, 12)
    assert thumb.axial.any()  # slices through the head, not the empty border
    assert thumb.coronal.any()


def test_case_with_a_lesion_shows_it():
    lesion = np.zeros((10, 12, 14), np.uint8)
    lesion[4:6, 5:7, 9] = 1
    thumb = canonical_thumbnail(_case(lesion), ["ms_lesion"])
    assert thumb.labels_axial["ms_lesion"].any()
    assert thumb.labels_coronal["ms_lesion"].any()
