"""n3f-tiny on the embedded scene for 3000 steps (scheduler stretched to match): is the retrieval gap budget-limited?"""
from pathlib import Path
from featurenerf_ns.method_configs import n3f_tiny_preset, _n3f_optimizers
from nerfstudio.scripts.train import main
cfg = n3f_tiny_preset('n3f-tiny')
cfg.pipeline.datamanager.data = Path('/tmp/n3f_scene')
cfg.output_dir = Path('/work/runs/out')
cfg.max_num_iterations = 3000
cfg.optimizers = _n3f_optimizers(3000)
cfg.pipeline.max_train_minutes = 40
cfg.timestamp = 'r3000'
main(cfg)
