"""The bilinear map sampler's gradient w.r.t. the maps, at the tiny and paper training shapes (issue 14, session 23):
torch's embedding_bag autograd (float32, the sampler before session 23), index_add_ (per tap / all taps), a sparse
CSR product, and the transposed bag that ``map_sampling._BilinearBag`` runs (float32 and bfloat16), each checked
against the float32 reference gradient. Forward + backward times; the forward alone is printed for subtraction.
Run: PYTHONPATH=. python docs/bench/sampler_backward.py."""
import torch
import torch.nn.functional as F

from featurenerf_ns.bench.parts import _timeit
from featurenerf_ns.model_components.map_sampling import _BilinearBag, _bilinear_taps
from featurenerf_ns.utils.cpu_malloc import keep_freed_memory

keep_freed_memory()
torch.manual_seed(0)


def ms(fn) -> float:
    return round(_timeit(fn, "cpu", min_time=1.0) * 1e3, 2)


for B, P, h, D in ((4, 11264, 32, 256), (4, 20480, 64, 1536)):
    M, ncell = B * P, B * h * h
    r, c, w = _bilinear_taps(torch.rand(B, P, 2) * 128, (h, h), (128, 128))
    cells = ((torch.arange(B) * (h * h))[:, None, None] + r * h + c).view(M, 4)
    w = w.view(M, 4)
    g = torch.randn(M, D).bfloat16()
    rows = torch.randn(ncell, D)
    print(f"{M} samples x {D} channels, {ncell} cells")

    def torch_autograd():
        rr = rows.clone().requires_grad_(True)
        F.embedding_bag(cells, rr, per_sample_weights=w, mode="sum").backward(g.float())
        return rr.grad

    def bag(dtype):
        def run():
            rr = rows.to(dtype, copy=True).requires_grad_(True)
            _BilinearBag.apply(rr, cells, w).backward(g.to(dtype))
            return rr.grad.float()

        return run

    def index_add_per_tap():
        gf, buf = g.float(), torch.zeros(ncell, D)
        for k in range(4):
            buf.index_add_(0, cells[:, k], gf * w[:, k, None])
        return buf

    def index_add_all_taps():
        buf = torch.zeros(ncell, D)
        return buf.index_add_(0, cells.flatten(), (g.float()[:, None, :] * w[:, :, None]).view(-1, D))

    def csr_product():
        S = torch.sparse_csr_tensor(torch.arange(0, 4 * M + 1, 4), cells.flatten(), w.flatten(), size=(M, ncell))
        return S.t() @ g.float()

    ref = torch_autograd()
    print("  forward only, float32 / bfloat16:", ms(lambda: F.embedding_bag(cells, rows, per_sample_weights=w,
          mode="sum")), "/", ms(lambda: F.embedding_bag(cells, rows.bfloat16(), per_sample_weights=w.bfloat16(),
                                                         mode="sum")), "ms")
    for name, fn in (
        ("torch embedding_bag autograd, float32 (fwd + bwd)", torch_autograd),
        ("transposed bag, float32 (fwd + bwd)", bag(torch.float32)),
        ("transposed bag, bfloat16 (fwd + bwd)", bag(torch.bfloat16)),
        ("index_add_ per tap (bwd only)", index_add_per_tap),
        ("index_add_ all taps (bwd only)", index_add_all_taps),
        ("sparse CSR product (bwd only)", csr_product),
    ):
        print(f"  {name}: {ms(fn)} ms, max |diff| to the reference {(fn() - ref).abs().max().item():.3g}"
              f" (max |grad| {ref.abs().max().item():.3g})")
