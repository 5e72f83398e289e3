# Tiny bf16 training step with the field under torch.compile (inductor, CPU) vs eager, one process (session 20, 2026-12-07: compiled 237 ms vs eager 202 / 182 ms)
# run: .venv/bin/python docs/bench/compile_field.py
"""Does torch.compile (inductor, CPU) of the field shorten the tiny training step? eager vs compiled, same process."""
import copy, time, sys
from pathlib import Path
from typing import cast
import torch
import featurenerf_ns.method_configs as mc

mode = sys.argv[1] if len(sys.argv) > 1 else "field"
cfg = copy.deepcopy(mc.featurenerf_tiny.config)
cfg.pipeline.datamanager.data = Path("data/shapenet/chair")
cfg.pipeline.model.precision = "bfloat16"
torch.manual_seed(0)
pipe = cfg.pipeline.setup(device="cpu", test_mode="val")
pipe.train()
model, dm = pipe.model, pipe.datamanager
opt = cfg.optimizers["field"]["optimizer"].setup(list(model.parameters()))
for inst in dm.rank_ids[: dm.config.max_cached_instances]:
    dm.instance(inst)
batches = [dm.next_train(s) for s in range(8)]

def step(i):
    rb, batch = batches[i % len(batches)]
    with model.conditioned(batch["source"]):
        outputs = model(rb)
    loss = sum(model.get_loss_dict(outputs, batch).values())
    opt.zero_grad()
    loss.backward()
    opt.step()

def timeit(n=16):
    for i in range(3):
        step(i)
    t = time.perf_counter()
    for i in range(n):
        step(i)
    return (time.perf_counter() - t) / n * 1e3

eager = timeit()
print(f"eager {eager:.1f} ms/step", flush=True)
real = model.field.forward
t = time.perf_counter()
if mode == "field":
    model.field.forward = torch.compile(real, dynamic=False)
step(0); step(1)
print(f"compile+2 steps {time.perf_counter()-t:.1f} s", flush=True)
comp = timeit()
model.field.forward = real
eager2 = timeit()
print(f"compiled {comp:.1f} ms/step; eager again {eager2:.1f}", flush=True)
