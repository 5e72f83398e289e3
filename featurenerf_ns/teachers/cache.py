"""On-disk caches of teacher feature maps, one file per instance, streamed by the DataManager.

Layout (default ``<data root>/teacher_cache/<teacher>/<category dir>/``)::

    manifest.json      teacher identity (id, weights hash, layer, facet, input size, normalisation, masking),
                       PCA settings + hash, dtype, format version, dataset fingerprint, images/s of the last build
    pca.npz            mean (D,), components (k, D) when PCA-k is on (fitted on the train split)
    <instance>.npy     float16 (V, C, h, w), all views of the instance (memory-mappable); a scene's frames are
                       one instance (:class:`FrameSet`, default dir ``<scene>/teacher_cache/<teacher>/scene/``)
    <instance>.json    sidecar written last: identity key, fingerprint of the instance's images + cameras, shape

Every file is written atomically (temporary file + rename), the sidecar after the array, so an interrupted
build leaves only complete instances and a re-run resumes after them. Whatever decides the features is in the
identity key: when it differs from the manifest the cache is rebuilt (what changed is printed), never reused.
An instance whose images or cameras changed since it was cached is re-extracted.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import Progress

from featurenerf_ns.data.layout import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
)
from featurenerf_ns.teachers.base import Teacher, TeacherConfig
from featurenerf_ns.teachers.image_sets import (  # noqa: F401  (re-exported: the cache's public names)
    CategoryImages,
    FrameSet,
    ImageSet,
    Source,
    TeacherCacheError,
    image_set,
    instance_fingerprint,
    load_views,
)
from featurenerf_ns.teachers.pca import FeaturePCA, fit_pca
from featurenerf_ns.utils.cli import rate_progress

CONSOLE = Console(soft_wrap=True)
FORMAT_VERSION = 1
DTYPE = "float16"
MANIFEST = "manifest.json"
PCA_FILE = "pca.npz"


def default_cache_dir(cat: Source, teacher_name: str) -> Path:
    src = image_set(cat)
    return src.root / "teacher_cache" / teacher_name / src.dirname


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def cache_identity(
    teacher: Teacher, pca_dim: Optional[int], pca_sha: Optional[str], l2_normalize: bool = False
) -> Dict[str, Any]:
    """What the cached features depend on (the human label is informative only and not compared)."""
    ident = {k: v for k, v in teacher.identity().items() if k != "label"}
    ident.update(format_version=FORMAT_VERSION, dtype=DTYPE, pca_dim=pca_dim, pca_sha256=pca_sha)
    if l2_normalize:  # only recorded when on, so caches built before the option existed keep their key
        ident["l2_normalize"] = True
    return ident


def _diff(old: Dict[str, Any], new: Dict[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def _extract(teacher: Teacher, rgb: torch.Tensor, alpha: torch.Tensor, category: Optional[str], l2: bool):
    f = teacher.extract(rgb, alpha, category=category).features
    return F.normalize(f, dim=1) if l2 else f


def cell_alpha(alpha: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
    return F.interpolate(alpha.float(), size=hw, mode="area")


# -------------------------------------------------------------------------------------------------------- build
@dataclass
class BuildReport:
    cache_dir: Path
    built: List[str]
    reused: List[str]
    images: int
    seconds: float
    rebuilt_reason: Optional[str]

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


class TeacherCache:
    """Reader of a complete cache: ``features(instance)`` is a read-only memory map (V, C, h, w) float16."""

    def __init__(self, cache_dir: Path):
        self.dir = Path(cache_dir)
        mf = self.dir / MANIFEST
        if not mf.is_file():
            raise TeacherCacheError(
                f"{mf}: teacher cache manifest not found; build it with `featurenerf-teacher cache --data <data>`"
            )
        try:
            self.manifest = json.loads(mf.read_text())
        except json.JSONDecodeError:
            raise TeacherCacheError(
                f"{mf}: corrupt manifest; delete {self.dir} and rebuild with `featurenerf-teacher cache`"
            ) from None
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise TeacherCacheError(
                f"{mf}: cache format {self.manifest.get('format_version')} (this version reads {FORMAT_VERSION}); "
                "rebuild with `featurenerf-teacher cache`"
            )
        self.identity: Dict[str, Any] = self.manifest["identity"]
        self.key: str = self.manifest["identity_key"]
        self.instances: List[str] = list(self.manifest.get("instances", []))
        self.pca = FeaturePCA.load(self.dir / PCA_FILE) if self.identity.get("pca_dim") else None
        self._maps: Dict[str, np.ndarray] = {}

    @property
    def dim(self) -> int:
        return int(self.identity["pca_dim"] or self.identity["dim"])

    @property
    def map_size(self) -> Tuple[int, int]:
        h, w = self.identity["map_size"]
        return int(h), int(w)

    @property
    def label(self) -> str:
        return self.manifest.get("label", self.identity.get("teacher", "?"))

    def path(self, inst: str) -> Path:
        return self.dir / f"{inst}.npy"

    def features(self, inst: str) -> np.ndarray:
        if inst not in self._maps:
            p = self.path(inst)
            if not p.is_file():
                raise TeacherCacheError(
                    f"{p}: instance {inst} not in the teacher cache; run `featurenerf-teacher cache` for this data"
                )
            try:
                arr = np.load(p, mmap_mode="r")
            except Exception as e:
                raise TeacherCacheError(
                    f"{p}: unreadable cache file ({type(e).__name__}); delete it and re-run `featurenerf-teacher cache`"
                ) from None
            if arr.ndim != 4 or arr.shape[1] != self.dim or tuple(arr.shape[2:]) != self.map_size:
                raise TeacherCacheError(
                    f"{p}: shape {arr.shape} does not match the manifest (V, {self.dim}, {self.map_size}); delete it "
                    "and re-run `featurenerf-teacher cache`"
                )
            self._maps[inst] = arr
        return self._maps[inst]

    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.dir.glob("*") if f.is_file())


def _sidecar_ok(cache_dir: Path, inst: str, key: str, fingerprint: str, shape: Tuple[int, ...]) -> bool:
    sc, arr = cache_dir / f"{inst}.json", cache_dir / f"{inst}.npy"
    if not (sc.is_file() and arr.is_file()):
        return False
    try:
        meta = json.loads(sc.read_text())
        a = np.load(arr, mmap_mode="r")
    except Exception:
        return False
    return (
        meta.get("identity_key") == key
        and meta.get("fingerprint") == fingerprint
        and tuple(a.shape) == tuple(shape)
        and tuple(meta.get("shape", ())) == tuple(shape)
    )


def _clear(cache_dir: Path) -> None:
    for pattern in ("*.npy", "*.json", PCA_FILE, ".*.tmp"):
        for f in cache_dir.glob(pattern):
            f.unlink()


def _progress() -> Progress:
    return rate_progress(CONSOLE)


def build_cache(
    cat: Source,
    teacher: Teacher,
    ids: Sequence[str],
    cache_dir: Optional[Path] = None,
    pca_dim: Optional[int] = None,
    pca_ids: Optional[Sequence[str]] = None,
    pca_views: int = 10,
    quiet: bool = False,
    l2_normalize: bool = False,
) -> BuildReport:
    """Caches ``teacher`` features of every view of ``ids``; resumable and never reusing stale files.

    PCA (``pca_dim``) is fitted on ``pca_ids`` (default: up to 20 train instances, ``pca_views`` evenly spaced
    views each, foreground cells only; a :class:`FrameSet`: its ``pca_frames``) before any instance is written, and
    is part of the identity. ``l2_normalize``: unit-normalise every teacher feature before the PCA (N3F's recipe)."""
    src = image_set(cat)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir(src, teacher.config.name)
    cache_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    images = 0
    mf_path = cache_dir / MANIFEST
    old = None
    if mf_path.is_file():
        try:
            old = json.loads(mf_path.read_text())
        except json.JSONDecodeError:
            old = None

    # PCA: reuse the stored one when everything else matches, else fit anew
    pca, pca_sha = None, None
    base_ident = cache_identity(teacher, pca_dim, None, l2_normalize)
    if pca_dim:
        pca_ids = list(pca_ids) if pca_ids is not None else src.default_pca_ids()
        pca_fit_ident = dict(base_ident, pca_fit_on=_sha(sorted(pca_ids)), pca_views=pca_views)
        if getattr(src, "pca_frames", None):
            pca_fit_ident["pca_frames"] = [int(i) for i in getattr(src, "pca_frames")]
        pf = cache_dir / PCA_FILE
        if old and old.get("pca_fit_identity") == pca_fit_ident and pf.is_file():
            pca = FeaturePCA.load(pf)
        else:
            samples = []
            n_img = 0
            for inst in pca_ids:
                paths = src.image_paths(inst)
                frames = getattr(src, "pca_frames", None) if inst == getattr(src, "pca_group", None) else None
                if frames:
                    pick = np.unique(np.linspace(0, len(frames) - 1, pca_views).round().astype(int))
                    views = np.asarray(frames)[pick]
                else:
                    views = np.unique(np.linspace(0, len(paths) - 1, pca_views).round().astype(int))
                rgb, alpha = load_views(paths, views)
                fm = _extract(teacher, rgb, alpha, src.category, l2_normalize)
                a = cell_alpha(alpha, fm.shape[-2:])
                samples.append(fm.permute(0, 2, 3, 1)[a[:, 0] > 0.5])
                n_img += len(views)
            pca = fit_pca(torch.cat(samples), pca_dim)
            images += n_img
            if not quiet:
                CONSOLE.print(
                    f"PCA-{pca_dim} fitted on {sum(len(s) for s in samples)} foreground cells of {n_img} train images: "
                    f"{pca.explained.sum() * 100:.1f}% of the variance kept"
                )
        pca_sha = hashlib.sha256(pca.to_bytes()).hexdigest()
    ident = cache_identity(teacher, pca_dim, pca_sha, l2_normalize)
    key = _sha(ident)[:16]

    reason = None
    if old is not None and old.get("identity_key") != key:
        reason = _diff(old.get("identity", {}), ident) or "identity changed"
        if not quiet:
            CONSOLE.print(
                f"[yellow]teacher cache {cache_dir} was built with different settings ({reason}); rebuilding[/yellow]"
            )
        _clear(cache_dir)
    elif old is None and any(cache_dir.glob("*.npy")):
        reason = "manifest missing"
        if not quiet:
            CONSOLE.print(f"[yellow]teacher cache {cache_dir} has no readable manifest; rebuilding[/yellow]")
        _clear(cache_dir)
    if pca is not None:
        atomic_write_bytes(cache_dir / PCA_FILE, pca.to_bytes())
    manifest = {
        "format_version": FORMAT_VERSION,
        "identity": ident,
        "identity_key": key,
        "label": teacher.label,
        "category": src.category,
        "data_root": str(src.root),
        "complete": False,
        "instances": [],
        "pca_fit_identity": pca_fit_ident if pca_dim else None,
    }
    atomic_write_json(mf_path, manifest)

    h, w = teacher.map_size()
    dim = pca_dim or teacher.dim
    built, reused, fingerprints = [], [], {}
    progress = _progress()
    task = progress.add_task(f"caching {teacher.config.name} features", total=len(ids), rate="")
    with progress if not quiet else _Null():
        t_extract, n_extract = 0.0, 0
        for inst in ids:
            paths = src.image_paths(inst)
            fp = src.fingerprint(inst)
            fingerprints[inst] = fp
            shape = (len(paths), dim, h, w)
            if _sidecar_ok(cache_dir, inst, key, fp, shape):
                reused.append(inst)
                progress.advance(task)
                continue
            t0 = time.perf_counter()
            chunks = []
            bs = max(1, teacher.config.batch_size)
            for s in range(0, len(paths), bs):  # bounded memory: one batch of images at a time
                rgb, alpha = load_views(paths, range(s, min(s + bs, len(paths))))
                f = _extract(teacher, rgb, alpha, src.category, l2_normalize)
                if not torch.isfinite(f).all():
                    raise TeacherCacheError(
                        f"{paths[s]}: teacher produced NaN/inf features for instance {inst}; check the "
                        "images and teacher weights"
                    )
                if pca is not None:
                    f = pca.project(f, cell_alpha(alpha, f.shape[-2:]) if teacher.config.mask_background else None)
                chunks.append(f.half().numpy())
            arr = np.concatenate(chunks)
            if tuple(arr.shape) != shape:
                raise TeacherCacheError(
                    f"teacher {teacher.config.name} returned maps {arr.shape[1:]} but announced {shape[1:]}; report "
                    "this bug"
                )
            atomic_write(cache_dir / f"{inst}.npy", lambda fobj: np.save(fobj, arr, allow_pickle=False))
            atomic_write_json(
                cache_dir / f"{inst}.json", {"identity_key": key, "fingerprint": fp, "shape": list(shape)}
            )
            t_extract += time.perf_counter() - t0
            n_extract += shape[0]
            images += shape[0]
            built.append(inst)
            progress.update(task, advance=1, rate=f"{n_extract / t_extract:.1f} images/s")
    seconds = time.perf_counter() - t_start
    manifest.update(
        complete=True,
        instances=list(ids),
        dataset_fingerprint=_sha([fingerprints[i] for i in ids]),
        images_per_second=round(n_extract / t_extract, 2) if n_extract else old and old.get("images_per_second"),
        bytes=int(sum((cache_dir / f"{i}.npy").stat().st_size for i in ids)),
    )
    atomic_write_json(mf_path, manifest)
    return BuildReport(cache_dir, built, reused, images, seconds, reason)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _complete_cache(cache_dir: Path, ids: Sequence[str], fix: str) -> TeacherCache:
    """The cache in ``cache_dir``, refused (one line ending with ``fix``) unless complete and covering ``ids``."""
    cache = TeacherCache(cache_dir)
    missing = [i for i in ids if i not in cache.instances]
    if missing or not cache.manifest.get("complete"):
        raise TeacherCacheError(
            f"{cache_dir / MANIFEST}: cache incomplete ({len(missing)} instances missing, e.g. {missing[:1]}); {fix}"
        )
    return cache


def open_cache(
    cat: Source,
    teacher: Teacher,
    ids: Sequence[str],
    cache_dir: Optional[Path] = None,
    pca_dim: Optional[int] = None,
    build: bool = True,
    quiet: bool = False,
    l2_normalize: bool = False,
    pca_views: int = 10,
) -> TeacherCache:
    """The cache for ``teacher`` covering ``ids``, built or completed first when ``build`` (else an error)."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir(cat, teacher.config.name)
    if build:
        build_cache(
            cat, teacher, ids, cache_dir, pca_dim=pca_dim, pca_views=pca_views, quiet=quiet, l2_normalize=l2_normalize
        )
    cache = _complete_cache(cache_dir, ids, "run `featurenerf-teacher cache`")
    want = cache_identity(teacher, pca_dim, cache.identity.get("pca_sha256"), l2_normalize)
    if _sha(want)[:16] != cache.key:
        raise TeacherCacheError(
            f"{cache_dir / MANIFEST}: cache built with other settings ({_diff(cache.identity, want)}); rebuild with "
            "`featurenerf-teacher cache`"
        )
    return cache


def open_cache_without_teacher(
    cat: Source,
    config: TeacherConfig,
    ids: Sequence[str],
    cache_dir: Optional[Path] = None,
    pca_dim: Optional[int] = None,
) -> TeacherCache:
    """The complete cache of ``config``'s teacher for ``ids``, opened without building the teacher network: for a
    machine that has the cache but not the teacher's weights (an offline GPU machine). Checked: the manifest is
    complete and covers ``ids``, records the same teacher options and PCA size, and every instance's sidecar
    matches its current images, cameras and map shape. Not checkable without the weights: their sha256, which is
    taken from the manifest as recorded where the cache was built. ``precision="auto"`` accepts the precision the
    cache was built at (the teacher does not run here); an explicit precision must match."""
    src = image_set(cat)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir(src, config.name)
    cache = _complete_cache(
        cache_dir, ids, "build it where the teacher's weights are (`featurenerf-teacher cache`) and copy it here"
    )
    want = {k: v for k, v in config.options().items() if k not in ("name", "batch_size")}
    want.update(teacher=config.name, pca_dim=pca_dim, l2_normalize=None)  # l2: recorded only when on (N3F)
    if want.get("precision") == "auto":  # the teacher never runs here: any precision it was cached at is "auto"
        want.pop("precision")
    have = {k: cache.identity.get(k) for k in want}
    if have != want:
        raise TeacherCacheError(
            f"{cache_dir / MANIFEST}: cache built with other settings ({_diff(have, want)}); build it with these "
            "settings where the teacher's weights are (`featurenerf-teacher cache`)"
        )
    stale = [
        i
        for i in ids
        if not _sidecar_ok(
            cache_dir, i, cache.key, src.fingerprint(i), (len(src.image_paths(i)), cache.dim, *cache.map_size)
        )
    ]
    if stale:
        raise TeacherCacheError(
            f"{cache_dir / f'{stale[0]}.json'}: cached features of {len(stale)} instances do not match their current "
            "images or cameras; rebuild the cache where the teacher's weights are (`featurenerf-teacher cache`)"
        )
    return cache
