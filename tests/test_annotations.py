"""The stored annotations agree with the stored cameras and with each other (read back from disk)."""

from __future__ import annotations

from _alignment import check_keypoints_project, check_part_maps, check_rays_hit_keypoints


def test_keypoints_project_onto_stored_2d_keypoints(chair_root):
    assert check_keypoints_project(chair_root / "chair", ("train", "test")) > 100


def test_nerfstudio_rays_through_2d_keypoints_hit_3d_keypoints(chair_root):
    """nerfstudio's own ray generation at the stored 2D keypoint passes through the 3D keypoint, and the
    rendered depth / part label there match the keypoint for visible keypoints."""
    assert check_rays_hit_keypoints(chair_root / "chair", ("test",)) > 50


def test_part_maps_agree_with_labelled_points(chair_root):
    """Unproject every foreground pixel with the stored depth; the nearest labelled surface point has the
    pixel's part label for the large majority of pixels (disagreement only along part boundaries)."""
    total, _ = check_part_maps(chair_root / "chair", ("test",))
    assert total > 1000
