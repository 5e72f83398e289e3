"""nerfstudio dataparser ``co3d-data``: CO3D v2 categories for multi-instance FeatureNeRF training
(``ns-train featurenerf-tiny co3d-data --data <co3d>/<category>``).

The sequences are converted once into our layout (:mod:`featurenerf_ns.data.co3d`: per-sequence normalisation, a
crop around the object through a virtual camera, mask-quality filters, set-list splits), cached, and from there on
read like any FeatureNeRF data: same cameras, same multi-instance batching, same teacher cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Type

from nerfstudio.data.dataparsers.base_dataparser import DataParser
from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from featurenerf_ns.data.co3d import Centre, Co3DSettings, convert_category
from featurenerf_ns.data.dataparser import FeatureNeRFDataParser, FeatureNeRFDataParserConfig
from featurenerf_ns.data.instances import CategoryData


@dataclass
class Co3DDataParserConfig(FeatureNeRFDataParserConfig):
    """CO3D v2 (frame/sequence annotations, masks, set lists) converted into FeatureNeRF's multi-instance layout."""

    _target: Type = field(default_factory=lambda: Co3DDataParser)
    data: Path = Path("data/co3d/hydrant")
    """CO3D category folder ``<root>/<category>`` (holding frame_annotations.jgz), or the root with --category."""
    subset_name: str = "fewview_dev"
    """Set list ``set_lists/set_lists_<subset>.json`` that assigns sequences to train/val/test."""
    image_size: int = 128
    """Side of the square crops (the benchmark's 128)."""
    num_views: int = 50
    """Frames per sequence, evenly spaced among those passing the filters (the benchmark has 50 views)."""
    centre: Centre = "auto"
    """Sequence centre: auto (point cloud when present, else cameras) | pointcloud | cameras (optical axes)."""
    mask_threshold: float = 0.5
    """CO3D's soft masks are foreground where >= this."""
    min_foreground: float = 0.02
    """Drop a frame whose object covers less of the crop."""
    max_border_foreground: float = 0.05
    """Drop a frame whose object covers more of the crop's border ring (cut off)."""
    min_frames: int = 10
    """Drop a sequence with fewer usable frames."""
    min_viewpoint_quality: Optional[float] = None
    """Drop sequences whose viewpoint_quality_score is below this (None: keep all)."""
    max_sequences: Optional[int] = None
    """Convert only the first N sequences of each split (quick experiments; part of the cache key)."""
    cache_dir: Optional[Path] = None
    """Where the converted data goes (default <root>/<category>/_featurenerf_ns/)."""

    def settings(self) -> Co3DSettings:
        return Co3DSettings(
            image_size=self.image_size,
            num_views=self.num_views,
            subset_name=self.subset_name,
            centre=self.centre,
            mask_threshold=self.mask_threshold,
            min_foreground=self.min_foreground,
            max_border_foreground=self.max_border_foreground,
            min_frames=self.min_frames,
            min_viewpoint_quality=self.min_viewpoint_quality,
            max_sequences=self.max_sequences,
        )


class Co3DDataParser(FeatureNeRFDataParser):
    config: Co3DDataParserConfig

    def __init__(self, config: Co3DDataParserConfig):
        DataParser.__init__(self, config=config)
        root, category = convert_category(config.data, config.category, config.settings(), config.cache_dir)
        self.converted_root = root
        self.category_data = CategoryData(root, category, verify_images=config.verify_images)


co3d_dataparser = DataParserSpecification(
    config=Co3DDataParserConfig(),
    description="CO3D v2 categories (converted once: normalised, cropped around the object, quality-filtered)",
)
