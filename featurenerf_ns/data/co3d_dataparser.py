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

import tyro
from nerfstudio.data.dataparsers.base_dataparser import DataParser
from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from featurenerf_ns.data.co3d import Co3DSettings, convert_category
from featurenerf_ns.data.dataparser import FeatureNeRFDataParser, FeatureNeRFDataParserConfig
from featurenerf_ns.data.instances import CategoryData


@dataclass
class Co3DDataParserConfig(FeatureNeRFDataParserConfig):
    """CO3D v2 (frame/sequence annotations, masks, set lists) converted into FeatureNeRF's multi-instance layout."""

    _target: Type = field(default_factory=lambda: Co3DDataParser)
    data: Path = Path("data/co3d/hydrant")
    """CO3D category folder ``<root>/<category>`` (holding frame_annotations.jgz), or the root with --category."""
    conversion: tyro.conf.OmitArgPrefixes[Co3DSettings] = field(default_factory=Co3DSettings)
    """What the conversion does (crop size, views, filters; :class:`Co3DSettings`); its flags keep their names."""
    cache_dir: Optional[Path] = None
    """Where the converted data goes (default <root>/<category>/_featurenerf_ns/)."""


class Co3DDataParser(FeatureNeRFDataParser):
    config: Co3DDataParserConfig

    def __init__(self, config: Co3DDataParserConfig):
        DataParser.__init__(self, config=config)
        root, category = convert_category(config.data, config.category, config.conversion, config.cache_dir)
        self.converted_root = root
        self.category_data = CategoryData(root, category, verify_images=config.verify_images)


co3d_dataparser = DataParserSpecification(
    config=Co3DDataParserConfig(),
    description="CO3D v2 categories (converted once: normalised, cropped around the object, quality-filtered)",
)
