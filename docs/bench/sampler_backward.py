"""The bilinear map sampler's backward (the gradient w.r.t. the maps) in five implementations, at the tiny and paper
training shapes (issue 14, session 23): torch's embedding_bag autograd, index_add_ (per tap / all taps), sparse CSR
products, and the transposed bag (taps sorted by cell as bags) that map_sampling._BilinearBag now uses.
Run: PYTHONPATH=. python docs/bench/sampler_backward.py."""
import time
from featurenerf_ns.utils.cpu_malloc import keep_freed_memory; keep_freed_memory()
import torch, torch.nn.functional as F
from featurenerf_ns.model_components.map_sampling import _bilinear_taps
def t(fn, n=5):
    fn(); fn()
    s=time.perf_counter()
    for _ in range(n): fn()
    return (time.perf_counter()-s)/n*1e3
torch.manual_seed(0)
for (B,P,h,D) in ((4,11264,32,256),(4,20480,64,1536)):
    M=B*P; ncell=B*h*h
    uv=torch.rand(B,P,2)*128
    r,c,w=_bilinear_taps(uv,(h,h),(128,128))
    cells=((torch.arange(B)*(h*h))[:,None,None]+r*h+c).view(M,4)
    w=w.view(M,4)
    g=torch.randn(M,D).bfloat16()
    rows=torch.randn(ncell,D)
    print(M,D,ncell)
    # reference fp32 autograd
    def ref():
        rr=rows.clone().requires_grad_(True)
        o=F.embedding_bag(cells,rr,per_sample_weights=w,mode="sum")
        o.backward(g.float()); return rr.grad
    G0=ref()
    print(" ref embedding_bag fwd+bwd fp32", t(ref))
    print(" fwd only fp32", t(lambda: F.embedding_bag(cells,rows,per_sample_weights=w,mode="sum")))
    rb=rows.bfloat16()
    print(" fwd only bf16", t(lambda: F.embedding_bag(cells,rb,per_sample_weights=w.bfloat16(),mode="sum")))
    def idxadd():
        gf=g.float(); buf=torch.zeros(ncell,D)
        for k in range(4): buf.index_add_(0,cells[:,k],gf*w[:,k,None])
        return buf
    print(" index_add x4", t(idxadd), (idxadd()-G0).abs().max().item())
    def idxadd1():
        gf=g.float(); buf=torch.zeros(ncell,D)
        buf.index_add_(0,cells.flatten(),(gf[:,None,:]*w[:,:,None]).view(-1,D))
        return buf
    print(" index_add 1", t(idxadd1), (idxadd1()-G0).abs().max().item())
    crow=torch.arange(0,4*M+1,4)
    def csr():
        S=torch.sparse_csr_tensor(crow,cells.flatten(),w.flatten(),size=(M,ncell))
        return (S.t() @ g.float())
    try: print(" csr S^T g", t(csr), (csr().to_dense() if csr().is_sparse else csr()-G0).abs().max().item())
    except Exception as e: print(" csr failed", str(e)[:200])
    order=torch.argsort(cells.flatten())
    def csr2():
        # transpose built directly: rows=cells, sorted
        cf=cells.flatten()[order]; src=order//4; ww=w.flatten()[order]
        counts=torch.bincount(cf,minlength=ncell); cr=torch.zeros(ncell+1,dtype=torch.long); cr[1:]=counts.cumsum(0)
        ST=torch.sparse_csr_tensor(cr,src,ww,size=(ncell,M))
        return ST @ g.float()
    try: print(" csr built transposed", t(csr2), (csr2()-G0).abs().max().item())
    except Exception as e: print(" csr2 failed", str(e)[:200])
    def csr3():
        cf=cells.flatten()[order]; src=order//4; ww=w.flatten()[order].bfloat16()
        counts=torch.bincount(cf,minlength=ncell); cr=torch.zeros(ncell+1,dtype=torch.long); cr[1:]=counts.cumsum(0)
        ST=torch.sparse_csr_tensor(cr,src,ww,size=(ncell,M))
        return ST @ g
    try: print(" csr bf16", t(csr3), (csr3().float()-G0).abs().max().item(), G0.abs().max().item())
    except Exception as e: print(" csr3 failed", str(e)[:200])
    def eb_T():
        # backward as an embedding_bag over g: per cell, sum of w*g over its samples (bags = cells)
        cf=cells.flatten()[order]; src=order//4; ww=w.flatten()[order]
        counts=torch.bincount(cf,minlength=ncell); offs=torch.zeros(ncell,dtype=torch.long); offs[1:]=counts.cumsum(0)[:-1]
        return F.embedding_bag(src,g,offs,per_sample_weights=ww.bfloat16(),mode="sum")
    try: print(" embedding_bag transposed bf16", t(eb_T), (eb_T().float()-G0).abs().max().item())
    except Exception as e: print(" ebT failed", str(e)[:200])
    def eb_T32():
        cf=cells.flatten()[order]; src=order//4; ww=w.flatten()[order]
        counts=torch.bincount(cf,minlength=ncell); offs=torch.zeros(ncell,dtype=torch.long); offs[1:]=counts.cumsum(0)[:-1]
        return F.embedding_bag(src,g.float(),offs,per_sample_weights=ww,mode="sum")
    print(" embedding_bag transposed f32", t(eb_T32), (eb_T32()-G0).abs().max().item())
