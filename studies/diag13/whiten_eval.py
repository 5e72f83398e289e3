"""Issue-13 diagnostic: the cross-view correspondence of the raw, centred and whitened internal feature (and the
distilled head) of trained study runs, on the study's 200 pairs of each kind."""
import json, sys, time
from pathlib import Path
from featurenerf_ns.scripts.study import _load_pipeline
from featurenerf_ns.data.layout import atomic_write_json

out = Path(sys.argv[1])  # usage: python whiten_eval.py OUT_DIR CONFIG.yml [CONFIG.yml ...] (from the study checkout)
for cfg in sys.argv[2:]:
    t0 = time.perf_counter()
    pipeline, ckpt, step = _load_pipeline(Path(cfg))
    feats = ("nerf_feature", "nerf_feature_centred", "nerf_feature_whitened")
    if pipeline.model.config.distill:
        feats += ("feature", "feature_whitened")
    m, _ = pipeline.correspondence_metrics(200, features=feats, teacher=False)
    name = Path(cfg).parent.parent.name
    atomic_write_json(out / f"whitened_{name}.json", {"config": cfg, "step": step + 1, "eval_pairs": 200,
                                                      "eval_s": round(time.perf_counter() - t0, 1), "results": m})
    for f in feats:
        print(name, f, {t: round(m.get(f"chair/{f}/{t}", float("nan")), 2) for t in
                        ("part3d_xview/miou", "kp3d_xview/pck@0.1", "part2d_xview/miou", "kp2d_xview/pck@10")})
