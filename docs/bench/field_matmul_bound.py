"""Upper bound on the paper field's share of the bf16 matmul peak if every elementwise pass were free (issue 14,
session 24): the field's linear layers alone (forward x W^T + b, input gradient g W, weight gradient g^T x), at the
paper preset's 81,920 samples per step, against the bench's peak (torch.mm 81,920 x 512 @ 512 x 512) and the real
field forward + backward, all in one process. oneDNN's inner-product backward-weights primitive
(aten::mkldnn_linear_backward_weights, bf16 inputs, float32 weight gradient) is timed beside torch.mm's g^T x.
Run: PYTHONPATH=. python docs/bench/field_matmul_bound.py."""
import torch

from featurenerf_ns.bench.parts import _field_and_inputs, _field_flops, _samples_per_ray, _timeit, RAYS_PER_STEP
from featurenerf_ns.utils.cpu_malloc import keep_freed_memory
from featurenerf_ns.utils.precision import autocast_context

keep_freed_memory()
ms = lambda f: _timeit(f, "cpu") * 1e3  # noqa: E731  the bench's timer: 2 warm-ups, then at least 2 s
bf = torch.bfloat16
field, pts, dirs, maps, src, hw, cfg = _field_and_inputs("paper", "cpu")
M, w = RAYS_PER_STEP * _samples_per_ray("paper"), cfg.hidden_dim
in_dim = 3 + 6 * cfg.num_freqs + (3 if cfg.use_viewdirs else 0)
layers = [(in_dim, w)] + [(w, w)] * (2 * cfg.num_blocks) + [(w, 7)]  # (fan-in, fan-out) of every linear layer

a, b = torch.randn(M, w, dtype=bf), torch.randn(w, w, dtype=bf)
peak = 2 * M * w * w / ms(lambda: torch.mm(a, b)) / 1e6  # GFLOP/s, as featurenerf-bench's part_matmul

rows, total = [], {"fwd": 0.0, "grad_x": 0.0, "grad_w": 0.0}
for fan_in, fan_out in sorted(set(layers)):
    x, g = torch.randn(M, fan_in, dtype=bf), torch.randn(M, fan_out, dtype=bf)
    W, bias = torch.randn(fan_out, fan_in, dtype=bf), torch.randn(fan_out, dtype=bf)
    t = {
        "fwd": ms(lambda: torch.addmm(bias, x, W.t())),
        "grad_x": ms(lambda: g @ W),
        "grad_w": ms(lambda: g.t() @ x),
    }
    n = layers.count((fan_in, fan_out))
    for k in total:
        total[k] += n * t[k]
    rows.append((fan_in, fan_out, n, t))
xm, gm, W32 = a.to_mkldnn(), torch.randn(M, w, dtype=bf).to_mkldnn(), torch.randn(w, w)
ip_bwd_w = ms(lambda: torch.ops.aten.mkldnn_linear_backward_weights(gm, xm, W32, True))

maps.requires_grad_(True)


def field_step():
    with autocast_context("cpu", "bfloat16"):
        o = field(pts, dirs, maps, src, hw, features=False)
    (o["density"].float().sum() + o["rgb"].float().sum() + o["nerf_feature_relu"].float().sum()
     + o["coords"].float().sum()).backward()


t_field = ms(field_step)
flops = 3 * _field_flops(cfg, 384, False) * M  # the bench's count (forward x 3)
t_mm = sum(total.values())
print(f"bf16 peak (torch.mm {M}x{w} @ {w}x{w}): {peak:.0f} GFLOP/s")
for fan_in, fan_out, n, t in rows:
    print(f"  layer {fan_in:>3} -> {fan_out:<3} x{n:<2} fwd {t['fwd']:6.1f}  grad_x {t['grad_x']:6.1f}  "
          f"grad_w {t['grad_w']:6.1f} ms")
print(f"  oneDNN inner-product backward-weights {M}x{w}, bias included: {ip_bwd_w:.1f} ms")
print(f"matmuls only: fwd {total['fwd']:.0f} + grad_x {total['grad_x']:.0f} + grad_w {total['grad_w']:.0f} = "
      f"{t_mm:.0f} ms -> {flops / t_mm / 1e6:.0f} GFLOP/s = {flops / t_mm / 1e6 / peak:.0%} of the peak (the bound)")
print(f"field fwd + bwd: {t_field:.0f} ms -> {flops / t_field / 1e6:.0f} GFLOP/s = "
      f"{flops / t_field / 1e6 / peak:.0%} of the peak; non-matmul time {t_field - t_mm:.0f} ms "
      f"({(t_field - t_mm) / t_field:.0%})")
