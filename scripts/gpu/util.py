"""Helpers of scripts/gpu_check.sh (standard library only, so any python3 runs them).

    util.py record SUMMARY STAGE RC SECONDS [NOTE]   # one stage's exit status and wall seconds, into SUMMARY
    util.py set SUMMARY KEY VALUE                    # a top-level figure of SUMMARY (VALUE parsed as JSON if it is)
    util.py steps BENCH TRAIN_S FALLBACK MIN MAX     # training steps that fit TRAIN_S at the bench's paper step
    util.py merge-bench OUT IN...                    # bench JSONs (eager, compiled) -> one, part by part
    util.py pack-study STUDY OUT                     # the study's small files (settings, evaluations, curves) -> tar.gz
    util.py dist-info REPO SITE                      # register REPO's package in SITE without building it

Every JSON is written atomically (a temporary file in the same folder, then a rename).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tarfile
from pathlib import Path

STEP_SAFETY = 1.3
"""ns-train's step costs more than the bench's (logging, checkpoints, the eval and learning-curve callbacks)."""


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def record(summary: str, stage: str, rc: str, seconds: str, note: str = "") -> None:
    """Appends one stage (exit status 124 = stopped at its time limit) to the summary's ``stages``."""
    path = Path(summary)
    d = _read_json(path)
    entry = {"stage": stage, "rc": int(rc), "seconds": round(float(seconds), 1)}
    if int(rc) == 124:
        entry["timed_out"] = True
    if note:
        entry["note"] = note
    d.setdefault("stages", []).append(entry)
    _write_json(path, d)


def set_value(summary: str, key: str, value: str) -> None:
    path = Path(summary)
    d = _read_json(path)
    try:
        d[key] = json.loads(value)
    except json.JSONDecodeError:
        d[key] = value
    _write_json(path, d)


def steps(bench: str, train_s: str, fallback: str, lo: str, hi: str) -> None:
    """Prints the steps that fit ``train_s`` seconds at the paper preset's measured step (bfloat16 where measured:
    the preset's ``auto`` precision on a bf16 GPU, else float32) times :data:`STEP_SAFETY`, clamped to [lo, hi];
    ``fallback`` when the bench has no paper step."""
    step = _read_json(Path(bench)).get("step", {})
    ms = step.get("paper_bfloat16_total_ms") or step.get("paper_float32_total_ms")
    if not ms:
        print(int(fallback))
        return
    n = math.floor(float(train_s) * 1000.0 / (float(ms) * STEP_SAFETY))
    print(max(int(lo), min(int(hi), n)))


def merge_bench(out: str, *inputs: str) -> None:
    """Part by part union of bench JSONs (compiled figures carry their ``_compiled`` suffix, so nothing collides;
    the first file's ``machine`` is kept, and each input is listed under ``runs``)."""
    merged: dict = {"runs": []}
    for name in inputs:
        d = _read_json(Path(name))
        if not d:
            continue
        merged["runs"].append(Path(name).name)
        for part, figures in d.items():
            if isinstance(figures, dict) and part not in ("machine", "targets"):
                merged.setdefault(part, {}).update(figures)
            elif part not in merged:
                merged[part] = figures
    _write_json(Path(out), merged)


def pack_study(study: str, out: str) -> None:
    """tar.gz of the study's settings, evaluations, learning curves, run records and configs (no checkpoints)."""
    root = Path(study)
    keep = ("study.json", "results.md", "learning_curve.jsonl", "train_done.json", "config.yml")
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and (p.name in keep or (p.suffix == ".json" and "eval" in p.parts))
    )
    tmp = Path(out).with_name(f".{Path(out).name}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for p in files:
            tar.add(p, arcname=str(Path(root.name) / p.relative_to(root)))
    os.replace(tmp, out)


def dist_info(repo: str, site: str) -> None:
    """The fallback when pip cannot build the package: SITE/<package> links to REPO's sources and a dist-info
    made from pyproject.toml carries its entry points (ns-train finds the methods through them)."""
    import tomllib

    proj = tomllib.loads((Path(repo) / "pyproject.toml").read_text())["project"]
    name, version = proj["name"], proj["version"]
    out = Path(site)
    out.mkdir(parents=True, exist_ok=True)
    link = out / name
    if not link.exists():
        link.symlink_to(Path(repo).resolve() / name, target_is_directory=True)
    info = out / f"{name}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    groups = {"console_scripts": proj.get("scripts", {}), **proj.get("entry-points", {})}
    text = "".join(f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n" for g, eps in groups.items())
    (info / "entry_points.txt").write_text(text)
    (info / "top_level.txt").write_text(name + "\n")


COMMANDS = {
    "record": record,
    "set": set_value,
    "steps": steps,
    "merge-bench": merge_bench,
    "pack-study": pack_study,
    "dist-info": dist_info,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        raise SystemExit(f"{sys.argv[0]}: give one of {', '.join(COMMANDS)} (see the docstring)")
    COMMANDS[sys.argv[1]](*sys.argv[2:])
