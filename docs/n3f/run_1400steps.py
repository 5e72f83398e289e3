"""n3f-tiny candidate preset: 1400 steps (10 min at 0.43 s/step idle), features from step 200, schedule matched."""
from pathlib import Path
from featurenerf_ns.method_configs import n3f_tiny_preset, _n3f_optimizers
from nerfstudio.scripts.train import main
cfg = n3f_tiny_preset('n3f-tiny')
cfg.pipeline.datamanager.data = Path('/tmp/n3f_scene')
cfg.output_dir = Path('/work/runs/out')
cfg.max_num_iterations = 1400
cfg.optimizers = _n3f_optimizers(1400)
cfg.pipeline.model.feature_start_step = 200
cfg.pipeline.max_train_minutes = 14
cfg.timestamp = 'r1400'
main(cfg)
