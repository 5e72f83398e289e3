"""Evaluation protocols: the fixed, versioned lists of pairs that every correspondence number is computed on.

A protocol belongs to one category and one split of one dataset (identified by the generator fingerprint in
``annotations/<category>/category.json``). It holds, in a deterministic random order drawn from ``seed``:

* ``cross_instance``: ``[source, target, view]`` — two different instances seen from the same view index (as the
  official protocol); each instance is conditioned on that view;
* ``novel_view``: ``[instance, source_view, target_view]`` — one instance conditioned on ``source_view``, its
  features rendered at ``target_view``;
* ``cross_view`` (version 2): ``[source, target, source_view, target_view]`` — two different instances, the source
  conditioned on (and seen from) ``source_view``, the target on ``target_view``, the two cameras' optical axes at
  least ``min_view_angle`` degrees apart. In v1's pairs both objects share the camera, the objects are aligned and
  the field works in the source camera's frame, so position in that frame alone transfers keypoints (an untrained
  network scores ~97% 2D PCK@10); across a real viewpoint change it does not (the situation of real photos).

Version 2 keeps version 1's ``cross_instance`` and ``novel_view`` lists unchanged (the same seeded draw) and adds
``cross_view`` from a second, independent stream, so v1 numbers stay comparable. Only pairs that share at least one
keypoint visible in both views and at least one part label present in both views are kept. Because the order is
random, the first ``k`` pairs are a uniform random subset: CPU runs evaluate ``protocol.subset(k)``. Files live in
``configs/protocols/<category>_<split>_v<version>.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Set, Tuple

import numpy as np

from featurenerf_ns.data.layout import FeatureNeRFDataError, atomic_write_json, load_json

PROTOCOL_VERSION = 2
"""Bumped whenever the pair-selection rule changes (old files are then refused, not silently reused)."""
READABLE_VERSIONS = (1, 2)
"""v1 files (no cross-view pairs) are still read: their numbers stay reproducible."""
DEFAULT_MIN_VIEW_ANGLE = 60.0
"""Cross-view pairs: least angle (degrees) between the source and target cameras' optical axes."""
DEFAULT_NUM_PAIRS = 1000
PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "configs" / "protocols"
"""The committed protocols of the embedded benchmark (present in a source checkout / editable install)."""


@dataclass
class Protocol:
    category: str
    split: str
    seed: int
    data_fingerprint: Optional[str]
    num_views: int
    cross_instance: List[Tuple[str, str, int]] = field(default_factory=list)
    novel_view: List[Tuple[str, int, int]] = field(default_factory=list)
    cross_view: List[Tuple[str, str, int, int]] = field(default_factory=list)
    min_view_angle: Optional[float] = None
    """Degrees between the cross-view pairs' optical axes (at least); None in v1 files."""
    version: int = PROTOCOL_VERSION
    path: Optional[Path] = None
    source: str = "drawn"
    """``drawn`` (our seeded draw, a protocol file) or ``official`` (the official split file's fixed pairs)."""

    def subset(self, n: Optional[int]) -> "Protocol":
        """A copy with the first ``n`` pairs of each kind (a uniform random subset, as the order is random);
        None = all."""
        return Protocol(
            self.category,
            self.split,
            self.seed,
            self.data_fingerprint,
            self.num_views,
            self.cross_instance[:n],
            self.novel_view[:n],
            self.cross_view[:n],
            self.min_view_angle,
            self.version,
            self.path,
            self.source,
        )

    def to_json(self) -> dict:
        d = {
            "format": "featurenerf-protocol",
            "version": self.version,
            "category": self.category,
            "split": self.split,
            "seed": self.seed,
            "data_fingerprint": self.data_fingerprint,
            "num_views": self.num_views,
            "cross_instance": [list(p) for p in self.cross_instance],
            "novel_view": [list(p) for p in self.novel_view],
        }
        if self.version >= 2:
            d["min_view_angle"] = self.min_view_angle
            d["cross_view"] = [list(p) for p in self.cross_view]
        return d

    def save(self, path: Path) -> None:
        atomic_write_json(Path(path), self.to_json())
        self.path = Path(path)


def default_protocol_path(
    category: str, split: str = "test", directory: Path = PROTOCOL_DIR, version: int = PROTOCOL_VERSION
) -> Path:
    return Path(directory) / f"{category}_{split}_v{version}.json"


def view_axes(poses: np.ndarray) -> np.ndarray:
    """(V, 4, 4) OpenGL camera-to-world -> (V, 3) unit viewing directions (the camera looks down -z)."""
    d = -np.asarray(poses, dtype=np.float64)[:, :3, 2]
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def view_angle(axes_a: np.ndarray, va: int, axes_b: np.ndarray, vb: int) -> float:
    """Degrees between view ``va`` of one instance and view ``vb`` of another (rows of :func:`view_axes`)."""
    return float(np.degrees(np.arccos(np.clip(axes_a[va] @ axes_b[vb], -1.0, 1.0))))


def _shares(a_vis: np.ndarray, b_vis: np.ndarray, a_labels: np.ndarray, b_labels: np.ndarray) -> bool:
    """a/b_vis: keypoint visibility (K,); a/b_labels: which part labels are present (L,)."""
    return bool((a_vis & b_vis).any() and (a_labels & b_labels).any())


ENUMERATE_LIMIT = 2_000_000
"""Candidate spaces up to this size are enumerated and permuted; larger ones are rejection-sampled."""


def _draw(rng: np.random.Generator, sizes: Tuple[int, ...], valid, num_pairs: int) -> list:
    """Up to ``num_pairs`` distinct valid index tuples from the grid ``sizes`` in a seeded random order."""
    total = int(np.prod(sizes))
    out: List[Tuple[int, ...]] = []
    if total <= ENUMERATE_LIMIT:
        for k in rng.permutation(total):
            coords = np.unravel_index(int(k), sizes)
            if valid(*coords):
                out.append(tuple(int(i) for i in coords))
                if len(out) == num_pairs:
                    break
        return out
    seen: Set[Tuple[int, ...]] = set()
    for _ in range(100 * num_pairs):
        idx = tuple(int(rng.integers(n)) for n in sizes)
        if idx not in seen and valid(*idx):
            seen.add(idx)
            out.append(idx)
            if len(out) == num_pairs:
                break
    return out


def make_protocol(
    cat,
    split: str = "test",
    num_pairs: int = DEFAULT_NUM_PAIRS,
    seed: int = 0,
    progress: Optional[Callable[[], object]] = None,
    ids: Optional[Sequence[str]] = None,
    version: int = PROTOCOL_VERSION,
    min_view_angle: float = DEFAULT_MIN_VIEW_ANGLE,
) -> Protocol:
    """Draws the pairs of ``cat`` (a :class:`~featurenerf_ns.data.instances.CategoryData` with annotations) among the
    instances of ``split`` (or only ``ids`` of it). ``version`` 1 draws no cross-view pairs."""
    if version not in READABLE_VERSIONS:
        raise ValueError(f"protocol version {version} unknown; choose from {READABLE_VERSIONS}")
    cat._require_annotations()
    ids = list(ids) if ids is not None else list(cat.ids(split))
    if not ids:
        raise FeatureNeRFDataError(
            f"{cat.layout.split_file}: split {split!r} has no instances; regenerate with more instances"
        )
    num_labels = len(cat.part_names) + 1
    vis, labels, axes = [], [], []
    for i in ids:
        axes.append(view_axes(cat.instance(i).poses))
        v = cat.view_annotations(i)
        vis.append(v["kp_visible"])
        parts = v["parts"].reshape(v["parts"].shape[0], -1).astype(np.int64)
        present = np.zeros((parts.shape[0], num_labels), bool)
        for view in range(parts.shape[0]):
            present[view, np.unique(parts[view])] = True
        present[:, 0] = False  # background is not a part
        labels.append(present)
        if progress:
            progress()
    num_views = min(v.shape[0] for v in vis)
    rng = np.random.default_rng(seed)
    n = len(ids)
    cross = _draw(
        rng,
        (n, n, num_views),
        lambda s, t, v: s != t and _shares(vis[s][v], vis[t][v], labels[s][v], labels[t][v]),
        num_pairs,
    )
    novel = _draw(
        rng,
        (n, num_views, num_views),
        lambda i, s, t: s != t and _shares(vis[i][s], vis[i][t], labels[i][s], labels[i][t]),
        num_pairs,
    )
    xview = []
    if version >= 2:  # an independent stream: v1's two lists above stay exactly as they were
        xview = _draw(
            np.random.default_rng([seed, 2]),
            (n, n, num_views, num_views),
            lambda s, t, a, b: (
                s != t
                and view_angle(axes[s], a, axes[t], b) >= min_view_angle
                and _shares(vis[s][a], vis[t][b], labels[s][a], labels[t][b])
            ),
            num_pairs,
        )
    fingerprint = cat.fingerprint
    return Protocol(
        cat.category,
        split,
        seed,
        fingerprint,
        num_views,
        [(ids[s], ids[t], v) for s, t, v in cross],
        [(ids[i], s, t) for i, s, t in novel],
        [(ids[s], ids[t], a, b) for s, t, a, b in xview],
        min_view_angle if version >= 2 else None,
        version=version,
    )


def load_protocol(path: Path, cat=None) -> Protocol:
    """Reads a protocol file; with ``cat`` given, checks that it was made for that data (fingerprint, ids)."""
    path = Path(path)
    d = load_json(path, "evaluation protocol")
    fix = f"make a new one with `featurenerf-protocol --data <data>/<category> --out {path}`"
    if not isinstance(d, dict) or d.get("format") != "featurenerf-protocol":
        raise FeatureNeRFDataError(f"{path}: not a featurenerf protocol file; {fix}")
    if d.get("version") not in READABLE_VERSIONS:
        raise FeatureNeRFDataError(
            f"{path}: protocol version {d.get('version')} but this code reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}; {fix}"
        )
    try:
        version = int(d["version"])
        proto = Protocol(
            str(d["category"]),
            str(d["split"]),
            int(d["seed"]),
            d.get("data_fingerprint"),
            int(d["num_views"]),
            [(str(s), str(t), int(v)) for s, t, v in d["cross_instance"]],
            [(str(i), int(s), int(t)) for i, s, t in d["novel_view"]],
            [(str(s), str(t), int(a), int(b)) for s, t, a, b in d["cross_view"]] if version >= 2 else [],
            float(d["min_view_angle"]) if version >= 2 else None,
            version=version,
            path=path,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise FeatureNeRFDataError(f"{path}: malformed protocol ({type(e).__name__}: {e}); {fix}") from None
    if cat is not None:
        check_protocol(proto, cat)
    return proto


def check_protocol(proto: Protocol, cat) -> None:
    where = proto.path or "protocol"
    fix = f"make one for this data with `featurenerf-protocol --data {cat.root / cat.dirname}`"
    if proto.category != cat.category:
        raise FeatureNeRFDataError(
            f"{where}: protocol is for category {proto.category!r}, the data is {cat.category!r}; {fix}"
        )
    have = cat.fingerprint
    if proto.data_fingerprint != have:
        raise FeatureNeRFDataError(
            f"{where}: made for data fingerprint {proto.data_fingerprint} "
            f"but {cat.layout.category_file} has {have}; {fix}"
        )
    ids = set(cat.ids(proto.split))
    used = (
        {p[0] for p in proto.cross_instance}
        | {p[1] for p in proto.cross_instance}
        | {p[0] for p in proto.novel_view}
        | {p[0] for p in proto.cross_view}
        | {p[1] for p in proto.cross_view}
    )
    missing = sorted(used - ids)
    if missing:
        raise FeatureNeRFDataError(
            f"{where}: instance {missing[0]} (and {len(missing) - 1} more) not in split {proto.split!r} of "
            f"{cat.layout.split_file}; {fix}"
        )


PAIR_SOURCES = ("protocol", "official")


def official_protocol(cat, split: str = "test") -> Protocol:
    """The official split file's fixed pairs (``<root>/splits/<synset>.json``): ``cross_inst_pairs`` entries
    ``{"src", "trg", "view"}`` (two instances, the same view index) become ``cross_instance``, ``cross_view_pairs``
    entries ``{"model_id", "src_view", "trg_view"}`` (one instance, two views: the official "cross-view" is our
    novel-view task) become ``novel_view``. The official files have no pairs of two instances seen from two views,
    so ``cross_view`` is empty. The pairs are used in their stored order, all of them (the paper's 1000 + 1000)."""
    path = cat.layout.split_file
    d = load_json(path, "split file")
    fix = "use the official split file, or --pipeline.correspondence.pairs protocol for our drawn pairs"
    if not isinstance(d, dict) or ("cross_inst_pairs" not in d and "cross_view_pairs" not in d):
        raise FeatureNeRFDataError(
            f"{path}: no cross_inst_pairs / cross_view_pairs lists (not an official split file); {fix}"
        )

    def parse(key: str, fields: Tuple[str, ...], kinds) -> list:
        out = []
        for k, e in enumerate(d.get(key, [])):
            try:
                out.append(tuple(kind(e[f]) for f, kind in zip(fields, kinds)))
            except (KeyError, TypeError, ValueError):
                raise FeatureNeRFDataError(
                    f"{path}: {key}[{k}] is {e!r}, expected an object with {', '.join(fields)}; {fix}"
                ) from None
        return out

    cross = parse("cross_inst_pairs", ("src", "trg", "view"), (str, str, int))
    novel = parse("cross_view_pairs", ("model_id", "src_view", "trg_view"), (str, int, int))
    proto = Protocol(cat.category, split, 0, cat.fingerprint, 0, cross, novel, [], None, path=path, source="official")
    check_protocol(proto, cat)
    used = {p[0] for p in cross} | {p[1] for p in cross} | {p[0] for p in novel}
    views = {i: len(cat.instance(i).poses) for i in used}
    proto.num_views = min(views.values()) if views else 0
    for inst, *vs in [(s, v) for s, _, v in cross] + [(t, v) for _, t, v in cross] + [(i, a, b) for i, a, b in novel]:
        if any(not 0 <= v < views[inst] for v in vs):
            raise FeatureNeRFDataError(
                f"{path}: a pair asks for view {vs} of {inst}, which has {views[inst]} views; {fix}"
            )
    return proto


def resolve_protocol(
    cat, split: str = "test", path: Optional[Path] = None, seed: int = 0, pairs: str = "protocol"
) -> Protocol:
    """The protocol to evaluate ``cat`` on: with ``pairs="official"`` the official split file's pairs
    (:func:`official_protocol`); else ``path`` if given, else the committed one for the category if it matches the
    data, else one drawn now with the default settings (deterministic, so identical on every call)."""
    if pairs not in PAIR_SOURCES:
        raise ValueError(f"pairs {pairs!r} unknown; choose {' or '.join(PAIR_SOURCES)}")
    if pairs == "official":
        return official_protocol(cat, split)
    if path is not None:
        return load_protocol(path, cat)
    default = default_protocol_path(cat.category, split)
    if default.is_file():
        proto = load_protocol(default)
        try:
            check_protocol(proto, cat)
            return proto
        except FeatureNeRFDataError:
            pass  # a different dataset than the embedded benchmark: fall through to a protocol of its own
    return make_protocol(cat, split, DEFAULT_NUM_PAIRS, seed)
