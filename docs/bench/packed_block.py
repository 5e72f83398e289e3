# One residual block in bf16 without autograd: F.linear vs oneDNN packed weights with fused ReLU (session 19: 28.4 -> 24.8 ms at 10k rows, bit-identical)
# run: .venv/bin/python docs/bench/packed_block.py
import time, torch, torch.nn.functional as F
def tm(fn, n=20):
    for _ in range(3): fn()
    ts=[]
    for _ in range(n):
        t=time.perf_counter(); fn(); ts.append(time.perf_counter()-t)
    ts.sort(); return ts[n//2]*1e3
W0 = torch.randn(512, 512).bfloat16()*0.05; b0 = torch.randn(512).bfloat16()
W1 = torch.randn(512, 512).bfloat16()*0.05; b1 = torch.randn(512).bfloat16()
P0 = torch.ops.mkldnn._reorder_linear_weight(W0, 16384); P1 = torch.ops.mkldnn._reorder_linear_weight(W1, 16384)
lp = torch.ops.mkldnn._linear_pointwise
with torch.no_grad():
  for M in (4096, 10000):
    h = torch.randn(M, 512).bfloat16()
    ref = lambda: h + F.linear(F.relu(F.linear(F.relu(h), W0, b0)), W1, b1)
    v1 = lambda: h + lp(lp(F.relu(h), P0, b0, "relu", [], ""), P1, b1, "none", [], "")
    v2 = lambda: lp.binary(lp(F.relu(h), P0, b0, "relu", [], ""), h, P1, b1, "add")
    r = ref().float()
    print(M, "ref", tm(ref), "v1", tm(v1), (v1().float()-r).abs().max().item(), "v2", tm(v2), (v2().float()-r).abs().max().item())
