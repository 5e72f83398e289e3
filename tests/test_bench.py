"""The scale bench (``featurenerf-bench --parts scale``) at a toy size: its figures exist and are consistent."""

from __future__ import annotations

from featurenerf_ns.bench.scale import scale_point, scale_targets


def test_scale_point_figures(tmp_path):
    res = scale_point(8, tmp_path, resolution=16, views=2, steps=4, keep=True)
    assert res["train_instances"] >= 1 and res["lru_instances"] == 256
    assert res["cache_disk_mib"] > 0 and res["data_disk_mib"] > 0
    # every train view of every train instance is cached: one fp16 (C, h, w) map per image plus small sidecars
    assert res["cache_bytes_per_image"] >= 384 * 4 * 4 * 2
    assert res["rss_after_steps_mib"] > 0 and res["peak_rss_mib"] >= res["rss_after_steps_mib"] * 0.9
    assert res["data_ms_per_step"] > 0 and (tmp_path / "n8" / "teacher_cache").is_dir()
    scale_point(8, tmp_path / "gone", resolution=16, views=2, steps=2)
    assert not (tmp_path / "gone" / "n8").exists()  # removed unless keep


def test_scale_targets_compare_the_two_largest_counts():
    fig = {"rss_after_steps_mib": 1000.0, "data_ms_per_step": 10.0, "peak_rss_mib": 1000.0}
    res = {f"n{n}_{k}": v for n in (60, 600) for k, v in fig.items()}
    res.update({"n3000_rss_after_steps_mib": 1200.0, "n3000_data_ms_per_step": 11.0, "n3000_peak_rss_mib": 1200.0})
    t = scale_targets(res)
    assert t["resident memory, 3000 / 600 instances"][2] is False  # grew 20%
    assert t["data time per step, 3000 / 600 instances"][2] is True
    assert scale_targets({}) == {}


def test_training_imports_do_not_need_embree():
    """Training, the bench and the study import the procedural cameras but not the Embree binding (rendering only):
    a GPU machine that trains on rendered data needs no embreex wheel (scripts/gpu_prepare.sh)."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['embreex'] = None\n"  # any `import embreex` now raises ImportError
        "import featurenerf_ns.method_configs, featurenerf_ns.bench.parts, featurenerf_ns.scripts.study_cli\n"
        "from featurenerf_ns.data.procedural.render import look_at\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_compiled_field_part_keys_and_first_call():
    """``featurenerf-bench --compile``: the field part runs with the field's forward under torch.compile (the eager
    backend here: graph capture without code generation, seconds on a CPU) and every figure ends in ``_compiled``;
    the first call (compilation included) is reported apart from the steady-state rate."""
    from featurenerf_ns.bench.parts import precisions, run_part

    res, rss = run_part("field", "cpu", "", {}, 0, presets=("tiny",), compile_backend="eager")
    assert res and all(k.endswith("_compiled") for k in res) and rss > 0
    for precision in precisions("cpu"):
        s = "" if precision == "float32" else "_bf16"
        assert res[f"tiny_samples_per_s{s}_compiled"] > 0 and res[f"tiny_first_call_s{s}_compiled"] > 0
    assert not any(k.startswith("paper_") for k in res)  # --presets tiny
