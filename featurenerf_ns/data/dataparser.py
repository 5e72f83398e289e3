"""nerfstudio dataparser for multi-instance FeatureNeRF data (official ShapeNet renders or the procedural
benchmark): ``--data data/shapenet/chair`` (or ``--data data/shapenet --category chair``).

All images of all instances of a split become one nerfstudio camera set; ``metadata`` carries the
per-image instance grouping (``instance_index``, ``view_index``, ``instance_ids``) so the FeatureNeRF
data manager can sample source/target views per object. World coordinates are kept exactly as stored
(no re-centring or re-scaling): features, keypoints and regressed coordinates live in that frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Type

import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from featurenerf_ns.data.instances import CategoryData


@dataclass
class FeatureNeRFDataParserConfig(DataParserConfig):
    """FeatureNeRF multi-instance data (official layout: img/, camera/, splits/)."""

    _target: Type = field(default_factory=lambda: FeatureNeRFDataParser)
    data: Path = Path("data/shapenet/chair")
    """Category directory ``<root>/<category>`` (need not exist itself), or the root with --category."""
    category: Optional[str] = None
    """Category name (chair, car, airplane, table, bottle, motorbike) or ShapeNet synset id."""
    max_instances: Optional[int] = None
    """Use only the first N instances of each split (quick experiments)."""
    verify_images: bool = False
    """Decode every image while parsing (slower) to report corrupt files up front."""
    scene_half_extent: float = 0.5
    """Half edge of the axis-aligned scene box (objects lie within 0.3 of the origin)."""


class FeatureNeRFDataParser(DataParser):
    config: FeatureNeRFDataParserConfig

    def __init__(self, config: FeatureNeRFDataParserConfig):
        super().__init__(config=config)
        self.category_data = CategoryData(config.data, config.category, verify_images=config.verify_images)

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        data = self.category_data
        ids = data.ids(split)
        if self.config.max_instances is not None:
            ids = ids[: self.config.max_instances]
        if not ids:
            raise ValueError(
                f"{data.layout.split_file}: split {split!r} is empty; generate more instances (--num-instances)"
            )
        records = [data.instance(i) for i in ids]
        image_filenames, poses, fx, width, height, inst_index = [], [], [], [], [], []
        view_index: List[int] = []
        for k, rec in enumerate(records):
            image_filenames.extend(rec.image_paths)
            poses.append(torch.as_tensor(rec.poses[:, :3, :], dtype=torch.float32))
            n = len(rec.image_paths)
            fx.extend([rec.focal] * n)
            width.extend([rec.width] * n)
            height.extend([rec.height] * n)
            inst_index.extend([k] * n)
            view_index.extend(range(n))
        fx_t = torch.tensor(fx, dtype=torch.float32)[:, None]
        w_t = torch.tensor(width, dtype=torch.int64)[:, None]
        h_t = torch.tensor(height, dtype=torch.int64)[:, None]
        cameras = Cameras(
            camera_to_worlds=torch.cat(poses, dim=0),
            fx=fx_t,
            fy=fx_t.clone(),
            cx=w_t.float() / 2.0,
            cy=h_t.float() / 2.0,
            width=w_t,
            height=h_t,
            camera_type=CameraType.PERSPECTIVE,
        )
        e = self.config.scene_half_extent
        metadata = {  # what the data manager reads; names and annotations come from self.category_data
            "instance_ids": list(ids),
            "instance_index": torch.tensor(inst_index, dtype=torch.long),
            "view_index": torch.tensor(view_index, dtype=torch.long),
        }
        return DataparserOutputs(
            image_filenames=image_filenames,
            cameras=cameras,
            alpha_color=torch.zeros(3),  # official renders are composited on black
            scene_box=SceneBox(aabb=torch.tensor([[-e, -e, -e], [e, e, e]], dtype=torch.float32)),
            metadata=metadata,
        )


featurenerf_dataparser = DataParserSpecification(
    config=FeatureNeRFDataParserConfig(),
    description="FeatureNeRF multi-instance data: official ShapeNet renders or the embedded procedural benchmark",
)
