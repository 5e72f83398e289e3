"""The timed parts of ``featurenerf-bench`` (each returns a dict of figures; the CLI runs each in its own process).

Random weights are used where only speed matters (it does not depend on the values).
"""

from __future__ import annotations

import copy
import functools
import resource
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, cast

import torch
from nerfstudio.cameras.rays import RayBundle

import featurenerf_ns.method_configs as mc
from featurenerf_ns.bench.scale import SCALE_INSTANCES, part_scale
from featurenerf_ns.bench.smoothing import part_smoothing
from featurenerf_ns.cameras import camera_rays
from featurenerf_ns.data.datamanager import FeatureNeRFDataManagerConfig
from featurenerf_ns.encoders.image_encoder import EncoderConfig
from featurenerf_ns.eval.metrics import nn_match
from featurenerf_ns.eval.providers import field_point_features
from featurenerf_ns.fields.featurenerf_field import FeatureNeRFField, FieldConfig, SourceViews
from featurenerf_ns.method_configs import FeatureNeRFPipelineConfig, paper_preset, tiny_preset
from featurenerf_ns.models.featurenerf import FeatureNeRFModelConfig
from featurenerf_ns.teachers import TeacherError, TeacherSpec
from featurenerf_ns.teachers.image_sets import TeacherCacheError
from featurenerf_ns.utils.cpu_malloc import keep_freed_memory
from featurenerf_ns.utils.precision import autocast_context, cpu_has_fast_bf16

PARTS = ("matmul", "field", "encoder", "step", "inference", "scale", "smoothing")
DEFAULT_PARTS = PARTS[:-1]
"""What a plain ``featurenerf-bench`` runs (``smoothing`` needs a generated scene with its teacher cache)."""
PRESET_NAMES = ("tiny", "paper")
COMPILED_PARTS = ("field", "step")
"""The parts ``--compile`` applies to (the field's forward under torch.compile); their figures get ``_compiled``."""


@functools.lru_cache(maxsize=None)
def _preset_shape(preset: str) -> Tuple[int, int, int, int, int, int, int, int]:
    """(hidden width, blocks, conditioned blocks, combine layer, coarse, importance, depth samples, image size) of a
    method preset, read from :mod:`featurenerf_ns.method_configs` (the one definition of the presets)."""
    p = cast(FeatureNeRFPipelineConfig, (tiny_preset if preset == "tiny" else paper_preset)("bench").pipeline)
    f, m = p.model.field, p.model
    size = p.datamanager.image_size or 128  # the paper preset keeps the data's 128 px
    return (
        f.hidden_dim,
        f.num_blocks,
        f.num_conditioned_blocks,
        f.combine_layer,
        m.num_coarse_samples,
        m.num_importance_samples,
        m.num_depth_samples,
        size,
    )


RAYS_PER_STEP = 4 * 128  # objects x rays (both presets)


def _sync(device: str) -> None:
    """Waits for queued CUDA work, so that a wall-clock interval covers the GPU time of what it encloses."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timeit(fn: Callable[[], object], device: str, min_time: float = 2.0, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        _sync(device)
        if time.perf_counter() - t0 >= min_time and n >= 3:
            return (time.perf_counter() - t0) / n


def _compile_forward(module: torch.nn.Module, backend: Optional[str]) -> None:
    """Puts ``module``'s forward under ``torch.compile`` (``backend``; None: leave it eager). The module, its
    parameters and state dict stay the same objects; the first call of each new input shape / autocast state
    compiles."""
    if backend:
        module.forward = torch.compile(module.forward, backend=backend)


def _samples_per_ray(preset: str) -> int:
    _, _, _, _, c, i, d, _ = _preset_shape(preset)
    return c + (c + 1 + i + d - 1)  # coarse + fine (coarse edges + importance + depth samples -> bins)


# ----------------------------------------------------------------------------------------------------------------------
# parts (each returns a dict of figures)


def part_matmul(device: str, presets: Tuple[str, ...] = PRESET_NAMES) -> dict:
    """The machine's dense matmul limit at the field's shapes, in float32 and (where fast) bfloat16."""
    out: Dict[str, Any] = {}
    for preset in presets:
        w = _preset_shape(preset)[0]
        n = RAYS_PER_STEP * _samples_per_ray(preset)
        for precision in precisions(device):
            dt = torch.float32 if precision == "float32" else torch.bfloat16
            a, b = torch.randn(n, w, device=device, dtype=dt), torch.randn(w, w, device=device, dtype=dt)
            t = _timeit(lambda: torch.mm(a, b), device)
            suffix = "" if precision == "float32" else "_bf16"
            out[f"{preset}_gflops{suffix}"] = 2 * n * w * w / t / 1e9
        out[f"{preset}_shape"] = f"{n}x{w} @ {w}x{w}"
    return out


def _field_and_inputs(preset: str, device: str, feature_dim: int = 384):
    w, blocks, cond, comb, *_, size = _preset_shape(preset)
    cfg = FieldConfig(hidden_dim=w, num_blocks=blocks, num_conditioned_blocks=cond, combine_layer=comb)
    field = FeatureNeRFField(cfg, 512, feature_dim).to(device)
    B, P = 4, 128 * _samples_per_ray(preset)
    g = torch.Generator().manual_seed(0)
    pts = (torch.rand(B, P, 3, generator=g) - 0.5).to(device) * 0.6
    dirs = torch.nn.functional.normalize(torch.randn(B, P, 3, generator=g), dim=-1).to(device)
    maps = torch.randn(B, 512, size // 2, size // 2, generator=g).to(device)
    c2w = torch.eye(4).repeat(B, 1, 1, 1)
    c2w[..., 2, 3] = 1.3
    src = SourceViews(
        torch.rand(B, 1, 3, size, size), c2w, torch.full((B, 1), size * 1.1), torch.full((B, 1, 2), size / 2)
    ).to(device)
    return field, pts, dirs, maps, src, (size, size), cfg


def _field_flops(cfg, feature_dim: int, per_sample_feature: bool) -> int:
    """Forward FLOPs per sample of the field's linear layers (the 1x1-conv conditioning runs per map pixel,
    excluded)."""
    w = cfg.hidden_dim
    in_dim = 3 + 6 * cfg.num_freqs + (3 if cfg.use_viewdirs else 0)
    head = 1 + 3 + 3 + (feature_dim if per_sample_feature else 0)
    return 2 * (in_dim * w + cfg.num_blocks * 2 * w * w + w * head)


def part_field(
    device: str,
    peak: Dict[str, float],
    presets: Tuple[str, ...] = PRESET_NAMES,
    compile_backend: Optional[str] = None,
) -> dict:
    """Field forward + backward samples/s per preset and precision, as a fraction of the same-precision peak;
    ``*_first_call_s``: the first forward + backward (with ``compile_backend``: the field's forward under
    torch.compile, and this first call includes its compilation)."""

    out = {}
    for preset in presets:
        field, pts, dirs, maps, src, hw, cfg = _field_and_inputs(preset, device)
        _compile_forward(field, compile_backend)
        maps.requires_grad_(True)
        for precision in precisions(device):
            suffix = "" if precision == "float32" else "_bf16"

            def step():
                with autocast_context(device, precision):
                    o = field(pts, dirs, maps, src, hw, features=False)
                (
                    o["density"].float().sum()
                    + o["rgb"].float().sum()
                    + o["nerf_feature_relu"].float().sum()
                    + o["coords"].float().sum()
                ).backward()

            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            out[f"{preset}_first_call_s{suffix}"] = time.perf_counter() - t0
            # printed at once: a compilation that outlasts its caller's time limit still leaves its time in the log
            print(f"field {preset} {precision}: first call {out[f'{preset}_first_call_s{suffix}']:.1f} s", flush=True)
            t = _timeit(step, device)
            n = pts.shape[0] * pts.shape[1]
            gflops = 3 * _field_flops(cfg, 384, False) * n / t / 1e9
            out[f"{preset}_samples_per_s{suffix}"] = n / t
            out[f"{preset}_ms_per_step{suffix}"] = t * 1e3
            out[f"{preset}_gflops{suffix}"] = gflops
            if peak.get(f"{preset}_gflops{suffix}"):
                out[f"{preset}_fraction_of_matmul_peak{suffix}"] = gflops / peak[f"{preset}_gflops{suffix}"]
    return out


def part_encoder(device: str) -> dict:
    enc = EncoderConfig(backbone="resnet34", weights="random").setup().to(device)
    out = {}
    for size in (64, 128):
        x = torch.rand(4, 3, size, size, device=device)
        with torch.no_grad():
            t = _timeit(lambda: enc(x), device)
        out[f"{size}px_forward_ms_per_image"] = t / 4 * 1e3

        def fb():
            enc(x).sum().backward()

        out[f"{size}px_forward_backward_ms_per_image"] = _timeit(fb, device) / 4 * 1e3
    return out


def precisions(device: str) -> Tuple[str, ...]:
    """float32, plus bfloat16 where the device runs it fast (CPUs with AMX / AVX512-BF16, CUDA)."""
    return ("float32", "bfloat16") if device != "cpu" or cpu_has_fast_bf16() else ("float32",)


def part_step(
    device: str, data: str, presets: Tuple[str, ...] = PRESET_NAMES, compile_backend: Optional[str] = None
) -> dict:
    """One training step of each preset (tiny: 64², paper: 128² and the 11.8M-parameter model) in each precision,
    split into data, encode, field, render (the rest of the forward pass), loss, backward and optimizer (on CUDA
    each stage is synchronised, so it holds its GPU time); ``first_step_s``: the first step (with
    ``compile_backend``: the field's forward under torch.compile, and this step includes its compilation).
    The teacher features come from the data's cache alone (the teacher network is not loaded)."""
    out = {}
    for preset in presets:
        for precision in precisions(device):
            res = _step_timings(device, data, preset, precision, compile_backend)
            out.update({f"{preset}_{precision}_{k}": v for k, v in res.items()})
    return out


def _step_timings(device: str, data: str, preset: str, precision: str, compile_backend: Optional[str] = None) -> dict:
    cfg = copy.deepcopy((mc.featurenerf_tiny if preset == "tiny" else mc.featurenerf).config)
    cfg.pipeline.datamanager.data = Path(data)
    cast(FeatureNeRFModelConfig, cfg.pipeline.model).precision = precision
    # the step reads cached maps: a complete cache is opened without the teacher network (a GPU machine has no
    # teacher weights); without one (a fresh data folder) the teacher builds it first, as training would
    dm_cfg = cast(FeatureNeRFDataManagerConfig, cfg.pipeline.datamanager)
    dm_cfg.teacher_cache_only = True
    torch.manual_seed(0)
    try:
        pipe = cfg.pipeline.setup(device=device, test_mode="val")
    except TeacherCacheError:
        dm_cfg.teacher_cache_only = False
        torch.manual_seed(0)
        pipe = cfg.pipeline.setup(device=device, test_mode="val")
    pipe.train()
    model, dm = pipe.model, pipe.datamanager
    opt = cfg.optimizers["field"]["optimizer"].setup(list(model.parameters()))  # the preset's Adam (fused)
    acc = {k: 0.0 for k in ("data", "encode", "field", "render", "loss", "backward", "optimizer")}
    timers = {"encode": 0.0, "field": 0.0}

    def wrap(module, key):
        real = module.forward

        def timed(*a, **k):
            _sync(device)
            t0 = time.perf_counter()
            r = real(*a, **k)
            _sync(device)
            timers[key] += time.perf_counter() - t0
            return r

        module.forward = timed

    _compile_forward(model.field, compile_backend)  # before the timer, so that the timer stays outside the graph
    wrap(model.encoder, "encode")
    wrap(model.field, "field")
    # steady state: a training run decodes each instance once into the data manager's LRU (the first epoch); 4 bench
    # steps would otherwise time mostly first decodes (43 ms per instance at 128 px, 50 views)
    warm_ids = dm.rank_ids[: dm.config.max_cached_instances]
    for inst in warm_ids:
        dm.instance(inst)
    n, warm = (20, 3) if preset == "tiny" or device != "cpu" else (3, 1)
    if compile_backend:
        # untimed recompiles: the coarse and fine passes differ in samples per ray, and the field's cached map
        # projection (_zmaps) keys on the optimiser's step count, which dynamo guards: that frame recompiles each
        # step until dynamo's recompile limit, then runs eagerly
        warm += 2 + int(getattr(torch._dynamo.config, "recompile_limit", 8))
    first_step_s = 0.0
    for step in range(n + warm):
        timers["encode"] = timers["field"] = 0.0
        _sync(device)
        t0 = time.perf_counter()
        rb, batch = dm.next_train(step)
        _sync(device)
        t1 = time.perf_counter()
        with model.conditioned(batch["source"]):
            outputs = model(rb)
        _sync(device)
        t2 = time.perf_counter()
        loss = sum(model.get_loss_dict(outputs, batch).values())
        _sync(device)
        t3 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        _sync(device)
        t4 = time.perf_counter()
        opt.step()
        _sync(device)
        t5 = time.perf_counter()
        if step == 0:
            first_step_s = t5 - t0
            print(f"step {preset} {precision}: first step {first_step_s:.1f} s", flush=True)
        if step >= warm:
            acc["data"] += t1 - t0
            acc["encode"] += timers["encode"]
            acc["field"] += timers["field"]
            acc["render"] += (t2 - t1) - timers["encode"] - timers["field"]
            acc["loss"] += t3 - t2
            acc["backward"] += t4 - t3
            acc["optimizer"] += t5 - t4
    out = {f"{k}_ms": v / n * 1e3 for k, v in acc.items()}
    out["total_ms"] = sum(acc.values()) / n * 1e3
    out["s_per_1000_steps"] = out["total_ms"]  # ms per step == s per 1000 steps
    out["first_step_s"] = first_step_s
    out["timed_steps"] = float(n)
    out["trainable_params"] = float(sum(p.numel() for p in model.parameters() if p.requires_grad))
    out["instances_decoded_before_timing"] = float(len(warm_ids))
    return out


def part_inference(device: str) -> dict:
    out: Dict[str, Any] = {}
    field, _, _, maps, src, hw, _ = _field_and_inputs("tiny", device)
    field.eval()
    g = torch.Generator().manual_seed(1)
    pa = ((torch.rand(10_000, 3, generator=g) - 0.5) * 0.6).to(device)
    pb = ((torch.rand(10_000, 3, generator=g) - 0.5) * 0.6).to(device)
    kp = pa[:12]
    one = type(src)(*(t[:1] for t in src))

    @torch.no_grad()
    def pair():
        feats = []
        for p in (torch.cat([pa, kp]), pb):
            d = torch.nn.functional.normalize(p - one.c2w[0, 0, :3, 3], dim=-1)
            feats.append(field(p[None], d[None], maps[:1], one, hw)["nerf_feature"][0])
        fa, fb = feats
        nn_match(fa[-12:], fb)  # keypoints -> target points
        nn_match(fb, fa[:-12])  # part labels of the target points

    out["pair_3d_transfer_10k_points_s"] = _timeit(pair, device, min_time=3.0, warmup=1)

    # the paper preset's query: encode one 128² view, then the 512-d internal feature at 10,000 points
    pcfg = copy.deepcopy(cast(FeatureNeRFModelConfig, mc.featurenerf.config.pipeline.model))
    pcfg.encoder.weights = "random"
    paper = pcfg.setup(scene_box=None, num_train_data=1, metadata={}, teacher_feature_dim=384).to(device).eval()
    c2w0 = torch.eye(4)
    c2w0[2, 3] = 1.3
    view = type(src)(
        torch.rand(1, 1, 3, 128, 128), c2w0[None, None], torch.full((1, 1), 128 * 1.1), torch.full((1, 1, 2), 64.0)
    ).to(device)
    q = ((torch.rand(10_000, 3, generator=g) - 0.5) * 0.6).to(device)
    for precision in precisions(device):
        paper.config.precision = precision

        @torch.no_grad()
        def query():
            paper.set_sources(view)  # drops the cached encoding: every call encodes again
            field_point_features(paper, q, ["nerf_feature"], chunk=16384)

        out[f"query_encode_plus_10k_points_{precision}_s"] = _timeit(query, device, min_time=3.0, warmup=1)

    # one 128^2 feature render with the tiny-preset model (coarse + importance + depth samples, all pixels)

    cfg = copy.deepcopy(cast(FeatureNeRFModelConfig, mc.featurenerf_tiny.config.pipeline.model))
    cfg.precision = "float32"
    model = cfg.setup(scene_box=None, num_train_data=1, metadata={}, teacher_feature_dim=384).to(device).eval()
    model.set_sources(one)
    H = 128
    v, u = torch.meshgrid(torch.arange(H), torch.arange(H), indexing="ij")
    c2w = torch.eye(4)
    c2w[2, 3] = 1.3
    o, d = camera_rays(c2w[None].expand(H * H, 4, 4), H * 1.1, (H, H), u.flatten().float(), v.flatten().float())

    chunk = cfg.eval_num_rays_per_chunk if device == "cpu" else 4096

    @torch.no_grad()
    def render():
        for i in range(0, H * H, chunk):
            n = min(chunk, H * H - i)
            model(
                RayBundle(
                    origins=o[i : i + n],
                    directions=d[i : i + n],
                    pixel_area=torch.full((n, 1), 1e-4),
                    camera_indices=torch.zeros(n, 1, dtype=torch.long),
                ).to(device)
            )

    out["render_128px_feature_map_s"] = _timeit(render, device, min_time=3.0, warmup=1)
    out["render_rays_per_chunk"] = chunk
    if "bfloat16" in precisions(device):  # the viewer's default precision on such CPUs

        def render_bf16():
            with model.precision_override("bfloat16"):
                render()

        out["render_128px_feature_map_bf16_s"] = _timeit(render_bf16, device, min_time=3.0, warmup=1)

    # teacher caching throughput (DINOv2 ViT-S/14 at 224 px; random weights when the converted ones are absent)
    try:
        teacher = TeacherSpec().setup(device=device)
    except TeacherError:
        teacher = TeacherSpec(weights="random").setup(device=device)
    imgs = torch.rand(16, 3, 128, 128, device=device)
    alpha = torch.ones(16, 1, 128, 128, device=device)
    t = _timeit(lambda: teacher.extract(imgs, alpha), device, min_time=3.0, warmup=1)
    out["teacher_images_per_s"] = 16 / t
    out["teacher"] = teacher.label
    return out


def run_part(
    part: str,
    device: str,
    data: str,
    peak: Dict[str, float],
    threads: int,
    scale_instances: Tuple[int, ...] = (),
    scene: str = "data/scene",
    presets: Tuple[str, ...] = PRESET_NAMES,
    compile_backend: Optional[str] = None,
) -> Tuple[dict, float]:
    """Runs one part; with ``compile_backend`` the :data:`COMPILED_PARTS` run with the field compiled and every
    figure of theirs gets a ``_compiled`` suffix (the other parts are unaffected)."""
    if threads:
        torch.set_num_threads(threads)
    keep_freed_memory()  # as in training and queries (every model build applies it): the parts measure that setting
    fn = {
        "matmul": lambda: part_matmul(device, presets),
        "field": lambda: part_field(device, peak, presets, compile_backend),
        "encoder": lambda: part_encoder(device),
        "step": lambda: part_step(device, data, presets, compile_backend),
        "inference": lambda: part_inference(device),
        "scale": lambda: part_scale(instances=scale_instances or SCALE_INSTANCES),
        "smoothing": lambda: part_smoothing(scene),
    }[part]
    res = fn()
    if compile_backend and part in COMPILED_PARTS:
        res = {f"{k}_compiled": v for k, v in res.items()}
    return res, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # MiB (Linux reports KiB)
