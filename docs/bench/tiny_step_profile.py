# Top ops of the tiny bf16 training step under torch.profiler (session 20, 2026-12-07; quoted in the README performance notes)
# run: .venv/bin/python docs/bench/tiny_step_profile.py
"""Top ops of the tiny bf16 training step (torch.profiler, 8 steps after warm-up)."""
import copy
from pathlib import Path
import torch
import featurenerf_ns.method_configs as mc
cfg = copy.deepcopy(mc.featurenerf_tiny.config)
cfg.pipeline.datamanager.data = Path("data/shapenet/chair")
cfg.pipeline.model.precision = "bfloat16"
torch.manual_seed(0)
pipe = cfg.pipeline.setup(device="cpu", test_mode="val"); pipe.train()
model, dm = pipe.model, pipe.datamanager
opt = cfg.optimizers["field"]["optimizer"].setup(list(model.parameters()))
for inst in dm.rank_ids[: dm.config.max_cached_instances]:
    dm.instance(inst)
def step(i):
    rb, batch = dm.next_train(i)
    with model.conditioned(batch["source"]):
        outputs = model(rb)
    loss = sum(model.get_loss_dict(outputs, batch).values())
    opt.zero_grad(); loss.backward(); opt.step()
for i in range(4): step(i)
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
    for i in range(8): step(4 + i)
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=45, max_name_column_width=60))
print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=50, max_shapes_column_width=70))
