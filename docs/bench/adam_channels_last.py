# Fused Adam over the tiny encoder's parameters stored channels-last vs contiguous (session 20, 2026-12-07: 7.2 / 7.6 ms vs 4.7 / 4.8 ms)
# run: .venv/bin/python docs/bench/adam_channels_last.py
import torch, time, copy
import featurenerf_ns.method_configs as mc
cfg = copy.deepcopy(mc.featurenerf_tiny.config)
enc = cfg.pipeline.model.encoder.setup()
for fmt in ("channels_last", "contiguous", "channels_last", "contiguous"):
    ps = [torch.nn.Parameter(p.detach().clone().contiguous(memory_format=(torch.channels_last if fmt == "channels_last" and p.ndim == 4 else torch.contiguous_format))) for p in enc.parameters()]
    for p in ps: p.grad = torch.randn_like(p)
    opt = cfg.optimizers["field"]["optimizer"].setup(ps)
    for i in range(3): opt.step()
    t = time.perf_counter()
    for i in range(30): opt.step()
    print(fmt, f"{(time.perf_counter()-t)/30*1e3:.2f} ms", sum(p.numel() for p in ps), flush=True)
