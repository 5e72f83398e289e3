"""Issue 17 diagnostic: does a smoother blur object boundaries, or does it only pull all features closer together?

For each run (config.yml) the N3F feature of the 10 held-out galleries (as in the study) is rendered; over the
boundary pixel pairs (u, v) of ground-truth regions a != b (at least one an object):
  band      = ||eta(m_u) - eta(m_v)||       (the study's "edge contrast of window means": 5x5 same-region means)
  far       = ||eta(M_a) - eta(M_b)||       (the two whole regions' mean features in that frame)
  sharpness = mean(band) / mean(far)        (1: the step at the boundary is the full region-to-region difference;
                                             below 1: the field blurs across the boundary)
and the roughness inside objects. A smoother that only contracts the feature space lowers band and far together
(sharpness unchanged); one that blurs across boundaries lowers sharpness.

    python docs/smoothing/experiments/edge_diagnostic.py data/scene out.json name=<run>/config.yml ...
"""

import json
import sys
from pathlib import Path

import torch

from featurenerf_ns.data.procedural.scene_data import SceneData
from featurenerf_ns.eval.scene_tasks import SceneRenders, SceneTaskConfig, evenly
from featurenerf_ns.eval.smoothness import SmoothnessTally
from featurenerf_ns.scripts.scene import load_n3f


@torch.no_grad()
def diagnose(config: Path, root: Path) -> dict:
    pipeline, _, step = load_n3f(config)
    scene = SceneData.load(root)
    renders = SceneRenders(pipeline, scene)
    instance = scene.frames()["instance"]
    held = evenly([f for f in scene.heldout if f in renders.where], SceneTaskConfig().heldout_galleries)
    tally = SmoothnessTally()  # band, far and sharpness are the shared metric's window / region contrasts
    for g in held:
        tally.add(renders.n3f_feature(g), torch.from_numpy(instance[g]).long())
    return {
        "step": step,
        "roughness": tally.roughness,
        "band": tally.edge_contrast_band,
        "far": tally.edge_contrast_regions,
        "sharpness": tally.boundary_sharpness,
    }


if __name__ == "__main__":
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    res = json.loads(out.read_text()) if out.is_file() else {}
    for arg in sys.argv[3:]:
        name, cfg = arg.split("=", 1)
        if name in res:
            continue
        res[name] = diagnose(Path(cfg), root)
        print(name, {k: round(v, 4) for k, v in res[name].items()}, flush=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=1))
        tmp.replace(out)
