# Packed-weight forward inside training (custom autograd function) vs autocast, 49,152 rows (session 19: fwd 164 vs 163 ms, fwd+bwd 735 vs 800 ms: dropped)
# run: .venv/bin/python docs/bench/packed_training_forward.py
import time, torch, torch.nn.functional as F
lp = torch.ops.mkldnn._linear_pointwise
class LA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, relu):
        xb = x.to(torch.bfloat16).reshape(-1, x.shape[-1]).contiguous(); wb = w.to(torch.bfloat16)
        wp = torch.ops.mkldnn._reorder_linear_weight(wb, 16384)
        y = lp(xb, wp, b.to(torch.bfloat16), "relu" if relu else "none", [], "")
        ctx.save_for_backward(xb, wb, y if relu else None); ctx.relu = relu; ctx.shape = x.shape; ctx.xdt = x.dtype
        return y.view(*x.shape[:-1], -1)
    @staticmethod
    def backward(ctx, g):
        xb, wb, y = ctx.saved_tensors
        g = g.reshape(-1, g.shape[-1]).to(torch.bfloat16)
        if ctx.relu: g = g * (y > 0)
        gx = (g @ wb).view(ctx.shape).to(ctx.xdt)
        gw = (g.t() @ xb).float(); gb = g.float().sum(0)
        return gx, gw, gb, None
def tm(fn, n=8):
    for _ in range(2): fn()
    ts=[]
    for _ in range(n):
        t=time.perf_counter(); fn(); ts.append(time.perf_counter()-t)
    ts.sort(); return ts[n//2]*1e3
torch.manual_seed(0)
l0 = torch.nn.Linear(512,512); l1 = torch.nn.Linear(512,512)
h0 = torch.randn(49152, 512).bfloat16()
def ref():
    h = h0.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        o = h + l1(F.relu(l0(F.relu(h))))
    o.float().square().mean().backward(); return o, h.grad, l0.weight.grad.clone(), l1.bias.grad.clone()
def new():
    h = h0.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        o = h + LA.apply(LA.apply(F.relu(h), l0.weight, l0.bias, True), l1.weight, l1.bias, False)
    o.float().square().mean().backward(); return o, h.grad, l0.weight.grad.clone(), l1.bias.grad.clone()
for m in (l0, l1): m.zero_grad()
a = ref(); l0.zero_grad(); l1.zero_grad(); b = new()
for x, y in zip(a, b): print("diff", ((x.float()-y.float()).abs().max()/x.float().abs().max()).item())
def r2(): l0.zero_grad(); l1.zero_grad(); ref()
def n2(): l0.zero_grad(); l1.zero_grad(); new()
print("ref ms", tm(r2), "new ms", tm(n2)); print("ref ms", tm(r2), "new ms", tm(n2))
print("reorder ms", tm(lambda: torch.ops.mkldnn._reorder_linear_weight(l0.weight.bfloat16(), 16384), 20))
def fwd_ref():
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16): h0 + l1(F.relu(l0(F.relu(h0))))
def fwd_new():
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16): h0 + LA.apply(LA.apply(F.relu(h0), l0.weight, l0.bias, True), l1.weight, l1.bias, False)
print("fwd only ref", tm(fwd_ref), "new", tm(fwd_new))
