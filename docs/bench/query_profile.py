# issue 14: where the paper query's time goes (encode one 128^2 view + nerf_feature at 10k points), bf16 and fp32.
# Run: .venv/bin/python docs/bench/query_profile.py  (output of 2026-12-06: query_profile_2026-12-06.txt)
import copy, time, torch
from typing import cast
import featurenerf_ns.method_configs as mc
from featurenerf_ns.models.featurenerf import FeatureNeRFModelConfig
from featurenerf_ns.fields.featurenerf_field import SourceViews
from featurenerf_ns.eval.providers import field_point_features
torch.manual_seed(0)
pcfg = copy.deepcopy(cast(FeatureNeRFModelConfig, mc.featurenerf.config.pipeline.model))
pcfg.encoder.weights = "random"
paper = pcfg.setup(scene_box=None, num_train_data=1, metadata={}, teacher_feature_dim=384).eval()
c2w0 = torch.eye(4); c2w0[2, 3] = 1.3
view = SourceViews(torch.rand(1, 1, 3, 128, 128), c2w0[None, None], torch.full((1, 1), 128 * 1.1), torch.full((1, 1, 2), 64.0))
q = (torch.rand(10_000, 3) - 0.5) * 0.6
a = torch.randn(49152, 512, dtype=torch.bfloat16); b = torch.randn(512, 512, dtype=torch.bfloat16)
for _ in range(3): torch.mm(a, b)
t = time.perf_counter(); n = 10
for _ in range(n): torch.mm(a, b)
print("bf16 mm GFLOP/s", 2 * 49152 * 512 * 512 * n / (time.perf_counter() - t) / 1e9)
a32, b32 = a.float(), b.float()
t = time.perf_counter()
for _ in range(n): torch.mm(a32, b32)
print("fp32 mm GFLOP/s", 2 * 49152 * 512 * 512 * n / (time.perf_counter() - t) / 1e9)
for precision in ("bfloat16", "float32"):
    paper.config.precision = precision
    @torch.no_grad()
    def query():
        paper.set_sources(view)
        field_point_features(paper, q, ["nerf_feature"], chunk=16384)
    @torch.no_grad()
    def encode():
        paper.set_sources(view); paper.encoded_sources()
    for f in (query, encode): f()
    for name, f in (("query", query), ("encode", encode)):
        t = time.perf_counter()
        for _ in range(5): f()
        print(precision, name, (time.perf_counter() - t) / 5)
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        query()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))
