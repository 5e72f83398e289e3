"""The weight-gradient matmul g^T x (81,920 x 512 both, bfloat16) in every formulation tried (issue 14, session 23):
all 35-41 ms on 2 cores with AMX (two runs), against 15-18 ms for the forward x W^T of the same FLOPs. Session 24
added a contiguous transposed copy first (51 ms with the copy excluded, the copy alone 81 ms) and oneDNN's
inner-product backward-weights primitive on oneDNN-layout inputs (43-49 ms; it needs float32 weights). In session
24's run einsum took 215 ms (the others 41-44 ms, the forward 21 ms).
Run: PYTHONPATH=. python docs/bench/gradw_shapes.py."""
import torch, torch.nn.functional as F
from featurenerf_ns.bench.parts import _timeit
from featurenerf_ns.utils.cpu_malloc import keep_freed_memory; keep_freed_memory()
def t(fn):  # ms per call (the bench's timer: 2 warm-ups, then at least 2 s)
    return _timeit(fn, "cpu") * 1e3
M,C=81920,512
g=torch.randn(M,C).bfloat16(); x=torch.randn(M,C).bfloat16()
ref=(g.float().t()@x.float())
def chk(f): r=f(); return (r.float()-ref).abs().max().item()/ref.abs().max().item()
cands={
 "mm(g.t(),x)": lambda: g.t()@x,
 "linear(g.t(),x.t())": lambda: F.linear(g.t(), x.t()),
 "bmm16": lambda: torch.bmm(g.view(16,-1,C).transpose(1,2), x.view(16,-1,C)).sum(0),
 "bmm64": lambda: torch.bmm(g.view(64,-1,C).transpose(1,2), x.view(64,-1,C)).sum(0),
 "bmm16 f32acc": lambda: torch.bmm(g.view(16,-1,C).transpose(1,2), x.view(16,-1,C)).float().sum(0),
 "mm x.t() g then t": lambda: (x.t()@g).t(),
 "einsum": lambda: torch.einsum("mi,mj->ij", g, x),
 "addmm_ acc chunks": None,
 "contiguous g^T (copy excluded) @ x": lambda: gT @ x,
 "oneDNN ip backward-weights": lambda: torch.ops.aten.mkldnn_linear_backward_weights(gm, xm, W32, False)[0],
}
gT = g.t().contiguous()
gm, xm, W32 = g.to_mkldnn(), x.to_mkldnn(), torch.zeros(C, C)  # W32: only its dtype / shape are read
def chunks():
    out=torch.zeros(C,C)
    for gc,xc in zip(g.split(8192),x.split(8192)): out.add_(gc.t()@xc)
    return out
cands["addmm_ acc chunks"]=chunks
for k,f in cands.items():
    print(k, round(t(f),2), "ms relerr", chk(f))
print("the copy g.t().contiguous()", round(t(lambda: g.t().contiguous()), 2))
print("fwd ref", t(lambda: x@torch.randn(C,C).bfloat16().t()))
