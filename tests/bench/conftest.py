"""Fixtures shared by the benchmark-build tests."""

from __future__ import annotations

import pytest

from medtransfer.bench.atlas import HeadAtlas, load_head_atlas


@pytest.fixture(scope="module")
def tiny_atlas() -> HeadAtlas:
    """The real Colin27 head atlas subsampled to 2 mm (8x fewer voxels) so that builds take seconds."""
    atlas = load_head_atlas()
    affine = atlas.affine.copy()
    affine[:3, :3] *= 2
    sub = (slice(None, None, 2),) * 3
    return HeadAtlas(
        atlas.image[sub].copy(), atlas.tissue[sub].copy(), atlas.region[sub].copy(), affine, atlas.region_names
    )
