# Fused vs default vs foreach Adam step at the paper model's parameter shapes (session 19; 47.7 / 150 / 17.4 ms measured while a training shared the CPU)
# run: .venv/bin/python docs/bench/adam_update.py
import time, torch
torch.manual_seed(0)
sizes = [(512, 512)] * 20 + [(512, 42), (1536, 512), (395, 512)] + [(256, 256, 3, 3)] * 12 + [(128,128,3,3)]*8 + [(64,64,3,3)]*6
def mk():
    ps = [torch.nn.Parameter(torch.randn(*s) * 0.01) for s in sizes]
    for p in ps: p.grad = torch.randn_like(p) * 1e-3
    return ps
print("params", sum(p.numel() for p in mk()) / 1e6, "M")
for kw in ({}, {"foreach": True}, {"fused": True}):
    ps = mk(); opt = torch.optim.Adam(ps, lr=5e-4, **kw)
    for _ in range(3): opt.step()
    ts = []
    for _ in range(10):
        t = time.perf_counter(); opt.step(); ts.append(time.perf_counter() - t)
    ts.sort(); print(kw, "%.1f ms" % (ts[5] * 1e3))
