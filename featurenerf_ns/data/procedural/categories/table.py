"""Table generator.

Parts (level-1, as ShapeNet-part): ``top`` (the tabletop), ``leg`` (corner legs, pedestal columns and
their feet, side panels / trestles standing on the floor), ``support`` (aprons, stretchers, lower
shelves and rails connecting the legs; absent on some instances).

Keypoints (9): ``top_front_left``, ``top_front_right``, ``top_back_left``, ``top_back_right`` (upper
surface of the top, slightly inset from its corners; on round and oval tops at the +-45/+-135 degree
directions just inside the rim), ``top_center`` (upper surface centre), ``leg_front_left_foot``,
``leg_front_right_foot``, ``leg_back_left_foot``, ``leg_back_right_foot`` (outer side of each corner
leg just above the floor, facing the corner; absent for pedestal and panel/trestle bases).

Style variation:
- proportions: long dining table, low coffee table (oblong or square), tall bar table, narrow console;
- top shape: rectangle, rounded rectangle, round, oval; top thickness;
- base: four legs (square, tapered, round, turned or splayed; optional apron; none / box / H
  stretchers, a footrest rail or a lower shelf), central pedestal (straight, tapered or tulip column
  on a cross or disk foot), double pedestal with a stretcher for long tops, two side panels (solid
  slabs or trestle frames with foot, post and cleat) with an optional stretcher or shelf.
"""

from __future__ import annotations

import numpy as np
import trimesh

from featurenerf_ns.data.procedural.geometry import (
    ShapeSpec,
    box,
    fit_sphere,
    hexahedron,
    pick,
    revolve,
    rotate_z,
    superellipse_warp,
    surface_hit,
)

PARTS = ["top", "leg", "support"]
KEYPOINTS = [
    ("top_front_left", "top"),
    ("top_front_right", "top"),
    ("top_back_left", "top"),
    ("top_back_right", "top"),
    ("top_center", "top"),
    ("leg_front_left_foot", "leg"),
    ("leg_front_right_foot", "leg"),
    ("leg_back_left_foot", "leg"),
    ("leg_back_right_foot", "leg"),
]
_COLUMN_BASE = {"straight": 1.0, "tapered": 1.5, "tulip": 2.6}  # column foot radius / narrowest radius
# (keypoint, sx, sy): +x is the table's left, -y its front.
_CORNERS = [("front_left", 1, -1), ("front_right", -1, -1), ("back_left", 1, 1), ("back_right", -1, 1)]

# Proportion classes: (probability, height range, structures with probabilities).
_KINDS = {
    "dining": (0.35, (0.72, 0.78), {"four_legs": 0.55, "pedestal": 0.25, "panels": 0.2}),
    "coffee": (0.30, (0.36, 0.48), {"four_legs": 0.55, "pedestal": 0.2, "panels": 0.25}),
    "bar": (0.20, (1.00, 1.10), {"four_legs": 0.6, "pedestal": 0.4}),
    "console": (0.15, (0.74, 0.85), {"four_legs": 0.65, "panels": 0.35}),
}


def _leg_hex(top_xy, bot_xy, w_top: float, w_bot: float, z_top: float) -> trimesh.Trimesh:
    """Square-section leg from a floor footprint (centre ``bot_xy``, width ``w_bot``) to ``z_top``."""
    sq = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float) / 2
    bot = np.column_stack([bot_xy + sq * w_bot, np.zeros(4)])
    top = np.column_stack([top_xy + sq * w_top, np.full(4, z_top)])
    return hexahedron(np.vstack([bot, top]))


def _four_legs(spec: ShapeSpec, rng, kind: str, a: float, b: float, z0: float, t: float, p: float, corner):
    """Four corner legs with optional apron and lower stretchers / shelf."""
    H = z0 + t
    lw = rng.uniform(
        *{"dining": (0.05, 0.09), "coffee": (0.04, 0.08), "bar": (0.035, 0.055), "console": (0.035, 0.06)}[kind]
    )
    style = pick(rng, {"square": 1, "tapered": 1, "round": 1, "turned": 0.7, "splayed": 0.7})
    if np.isinf(p):  # rectangular top: legs inset from the edges
        margin = rng.uniform(0.06, 0.12) if style == "splayed" else rng.uniform(0.01, 0.07)
        lx, ly = a - lw / 2 - margin, b - lw / 2 - margin
    else:  # curved outline: legs along the diagonals, well under the top
        f = rng.uniform(0.6, 0.78)
        lx, ly = f * corner[0], f * corner[1]
    w_bot = lw * (rng.uniform(0.45, 0.7) if style in ("tapered", "splayed") else 1.0)
    # Splayed feet stay inside the top's outline (measured along the diagonal).
    room = min(corner[0] - lx, corner[1] - ly) - w_bot / 2
    splay = rng.uniform(0.4, 0.9) * max(room, 0.0) if style == "splayed" else 0.0
    z_top = z0 + 0.5 * t  # legs run into the top
    turned = np.array(
        [
            [0.36, 0],
            [0.44, 0.03],
            [0.30, 0.08],
            [0.27, 0.40],
            [0.42, 0.50],
            [0.30, 0.57],
            [0.32, 0.78],
            [0.50, 0.80],
            [0.50, 1.0],
        ]
    )
    thin = {"square": lw, "round": lw, "turned": 0.54 * lw}.get(style, w_bot)  # narrowest leg width

    for name, sx, sy in _CORNERS:
        top_xy, bot_xy = np.array([sx * lx, sy * ly]), np.array([sx * (lx + splay), sy * (ly + splay)])
        if style == "round":
            leg = revolve([(lw / 2, 0.0), (lw / 2, z_top)], center=(*bot_xy, 0), sections=20)
        elif style == "turned":
            leg = revolve(turned * [lw, z_top], center=(*bot_xy, 0), sections=20)
        else:
            leg = _leg_hex(top_xy, bot_xy, lw, w_bot, z_top)
        spec.add("leg", leg)
        # Outer side of the leg just above the floor, facing the table corner (visible from above, like
        # KeypointNet's leg-end points); found by casting a ray at the leg from outside.
        out = np.array([sx, sy, 0.0]) / np.sqrt(2.0)
        z_kp = 0.02 * z_top
        spec.kp(f"leg_{name}_foot", surface_hit(leg, (*bot_xy, z_kp) + out, -out))

    apron = bool(rng.random() < {"dining": 0.7, "coffee": 0.4, "bar": 0.5, "console": 0.75}[kind])
    if apron:  # rails under the top, outer faces set back from the leg faces, ends buried in the legs
        ah = rng.uniform(0.05, 0.12) * (0.6 if kind == "coffee" else 1.0)
        at = 0.35 * lw
        zc, hz = z0 - ah / 2 + 0.2 * t, ah + 0.4 * t
        for s in (-1, 1):
            spec.add("support", box((0, s * (ly + 0.3 * lw - at / 2), zc), (2 * lx, at, hz)))
            spec.add("support", box((s * (lx + 0.3 * lw - at / 2), 0, zc), (at, 2 * ly, hz)))

    lower = pick(
        rng,
        {"none": 1.2, "box": 0.6, "h": 0.5, "shelf": 0.9 if kind == "coffee" else 0.3}
        if kind != "bar"
        else {"none": 0.6, "footrest": 1.0, "h": 0.3},
    )
    if lower != "none":
        zs = H * (rng.uniform(0.25, 0.35) if lower == "footrest" else rng.uniform(0.1, 0.3))
        k = 1.0 - zs / z_top  # leg axis position at height zs (splayed legs lean inwards going up)
        sxs, sys_ = lx + splay * k, ly + splay * k
        if lower == "shelf":
            spec.add("support", box((0, 0, zs), (2 * sxs, 2 * sys_, rng.uniform(0.015, 0.03))))
        else:
            w_at = thin if style in ("square", "round", "turned") else w_bot + (lw - w_bot) * zs / z_top
            s = 0.45 * w_at
            spec.add("support", box((sxs, 0, zs), (s, 2 * sys_, s)))
            spec.add("support", box((-sxs, 0, zs), (s, 2 * sys_, s)))
            if lower == "h":
                spec.add("support", box((0, 0, zs), (2 * sxs, 0.8 * s, 0.8 * s)))
            else:  # box / footrest: rails all round
                for sy in (-1, 1):
                    spec.add("support", box((0, sy * sys_, zs + 0.1 * s), (2 * sxs, s, s)))
    return dict(legs=style, leg_width=float(lw), splay=float(splay), apron=apron, lower=lower)


def _column(style: str, r: float, z0: float, z1: float) -> trimesh.Trimesh:
    """Pedestal column between z0 and z1 whose narrowest radius is ``r`` (see ``_COLUMN_BASE``)."""
    h = z1 - z0
    prof = {
        "straight": [(r, z0), (r, z1)],
        "tapered": [(1.5 * r, z0), (r, z1)],
        "tulip": [(2.6 * r, z0), (1.7 * r, z0 + 0.12 * h), (r, z0 + 0.4 * h), (r, z1 - 0.12 * h), (1.6 * r, z1)],
    }
    return revolve(prof[style], sections=32)


def _pedestal(spec: ShapeSpec, rng, a: float, b: float, z0: float, t: float):
    """One central column on a cross or disk foot, or two columns with a stretcher for long tops."""
    H = z0 + t
    r = float(np.clip(rng.uniform(0.1, 0.15) * min(a, b), 0.03, 0.08))
    col = pick(rng, {"straight": 1, "tapered": 1, "tulip": 1})
    r_base = _COLUMN_BASE[col] * r
    if a / b > 1.4:  # double pedestal: two columns on floor beams, linked by a stretcher
        xc = rng.uniform(0.45, 0.62) * a
        fl, fh = rng.uniform(0.65, 0.9) * b, rng.uniform(0.05, 0.09)
        fw = rng.uniform(2.1, 2.8) * r_base
        beam = np.array(
            [
                [-fw / 2, -fl, 0],
                [fw / 2, -fl, 0],
                [fw / 2, fl, 0],
                [-fw / 2, fl, 0],
                [-fw / 2, -0.7 * fl, fh],
                [fw / 2, -0.7 * fl, fh],
                [fw / 2, 0.7 * fl, fh],
                [-fw / 2, 0.7 * fl, fh],
            ]
        )
        column = _column(col, r, 0.5 * fh, z0 + 0.5 * t)
        for sx in (-1, 1):
            spec.add("leg", hexahedron(beam + [sx * xc, 0, 0]))
            spec.add("leg", column.copy().apply_translation((sx * xc, 0, 0)))
        spec.add("support", box((0, 0, rng.uniform(0.25, 0.5) * H), (2 * xc, r, 1.2 * r)))
        return dict(pedestal="double", column=col, column_radius=r)

    foot = pick(rng, {"cross": 1, "disk": 1})
    reach = rng.uniform(0.55, 0.85) * min(a, b)
    if foot == "cross":
        fh, fw, pad = rng.uniform(0.04, 0.08), rng.uniform(1.2, 2.0) * r, 0.012
        arm = np.array(
            [
                [0, -fw / 2, pad],
                [reach, -0.35 * fw, pad],
                [reach, 0.35 * fw, pad],
                [0, fw / 2, pad],
                [0, -fw / 2, pad + fh],
                [reach, -0.35 * fw, pad + 0.45 * fh],
                [reach, 0.35 * fw, pad + 0.45 * fh],
                [0, fw / 2, pad + fh],
            ]
        )
        n_arms = 4 if rng.random() < 0.75 else 3
        phase = np.pi / 4 if n_arms == 4 else np.pi / 2  # 4 arms towards the corners, 3 with one at the back
        for k in range(n_arms):
            ang = phase + 2 * np.pi * k / n_arms
            spec.add("leg", rotate_z(hexahedron(arm), ang))
            tip = 0.92 * reach * np.array([np.cos(ang), np.sin(ang)])
            spec.add("leg", revolve([(0.3 * fw, 0), (0.3 * fw, pad + 0.2 * fh)], center=(*tip, 0), sections=16))
        # The hub hides where the arms overlap and swallows the column's foot.
        hub = max(1.05 * r_base, 0.75 * fw)
        spec.add("leg", revolve([(hub, 0.5 * pad), (hub, pad + 1.15 * fh)], sections=32))
        base_z = pad + 0.6 * fh
    else:
        reach, dh = max(0.8 * reach, 1.4 * r_base), rng.uniform(0.03, 0.06)
        spec.add("leg", revolve([(reach, 0), (reach, 0.25 * dh), (0.35 * reach, dh), (0.3 * reach, dh)], sections=48))
        base_z = 0.5 * dh
    spec.add("leg", _column(col, r, base_z, z0 + 0.5 * t))
    return dict(pedestal="single", foot=foot, column=col, column_radius=r)


def _panels(spec: ShapeSpec, rng, a: float, b: float, z0: float, t: float):
    """Two side panels (solid slabs or trestle frames), optionally joined by a stretcher or shelf."""
    H = z0 + t
    frame = bool(rng.random() < 0.5)
    pt = rng.uniform(0.03, 0.06)
    xp = a - pt / 2 - (rng.uniform(0.06, 0.18) * a if frame else rng.uniform(0.01, 0.12) * a)
    dp = rng.uniform(0.7, 0.95) * 2 * b
    pd = rng.uniform(0.08, 0.2) * 2 * b  # trestle post depth
    for sx in (-1, 1):
        x = sx * xp
        if frame:
            fh, ch = rng.uniform(0.04, 0.07), rng.uniform(0.04, 0.07)
            spec.add("leg", box((x, 0, fh / 2), (1.6 * pt, dp, fh)))  # foot
            spec.add("leg", box((x, 0, (0.5 * fh + z0 - 0.5 * ch) / 2), (pt, pd, z0 - 0.5 * ch - 0.5 * fh)))
            spec.add("leg", box((x, 0, z0 - ch / 2 + 0.2 * t), (1.3 * pt, 0.9 * dp, ch + 0.4 * t)))  # cleat
        else:
            spec.add("leg", box((x, 0, (z0 + 0.5 * t) / 2), (pt, dp, z0 + 0.5 * t)))
    link = pick(rng, {"none": 0.6, "stretcher": 1.0, "shelf": 0.0 if frame else 0.6})
    if link == "stretcher":
        zs = rng.uniform(0.15, 0.55) * H
        sw = min(rng.uniform(0.04, 0.1), 0.7 * (pd if frame else dp))
        spec.add("support", box((0, 0, zs), (2 * xp, sw, rng.uniform(0.03, 0.08))))
    elif link == "shelf":
        spec.add("support", box((0, 0, rng.uniform(0.12, 0.35) * H), (2 * xp, 0.9 * dp, rng.uniform(0.015, 0.03))))
    return dict(panels="trestle" if frame else "slab", link=link)


def build(rng: np.random.Generator) -> ShapeSpec:
    spec = ShapeSpec()
    kind = pick(rng, {k: v[0] for k, v in _KINDS.items()})
    H = rng.uniform(*_KINDS[kind][1])
    structure = pick(rng, _KINDS[kind][2])

    shapes = {"rect": 1.0, "rounded": 0.6, "round": 0.8, "oval": 0.5, "square": 0.6}
    if structure == "panels":
        shapes = {"rect": 1.0}
    elif kind == "console":
        shapes = {"rect": 1.0, "rounded": 0.5}
    elif structure == "pedestal" and kind != "dining":
        shapes = {"round": 1.0, "square": 0.6}
    shape = pick(rng, shapes)
    if shape in ("round", "square"):
        L = W = rng.uniform(*{"dining": (1.1, 1.5), "coffee": (0.7, 1.1), "bar": (0.55, 0.8)}[kind])
    else:
        L, W = {
            "dining": (rng.uniform(1.4, 2.2), rng.uniform(0.8, 1.0)),
            "coffee": (rng.uniform(0.9, 1.4), rng.uniform(0.45, 0.75)),
            "bar": (rng.uniform(0.9, 1.3), rng.uniform(0.5, 0.7)),
            "console": (rng.uniform(1.0, 1.6), rng.uniform(0.3, 0.45)),
        }[kind]
    t = rng.uniform(0.025, 0.06)
    a, b, z0 = L / 2, W / 2, H - t
    p = {"round": 2.0, "oval": 2.0, "rounded": rng.uniform(4.0, 9.0)}.get(shape, np.inf)
    spec.style.update(
        kind=kind,
        structure=structure,
        top_shape=shape,
        length=float(L),
        width=float(W),
        height=float(H),
        top_thickness=float(t),
    )

    # Top: box for rectangles, warped disk for the curved outlines.
    if np.isinf(p):
        spec.add("top", box((0, 0, H - t / 2), (L, W, t)))
    else:  # round / oval / rounded-rectangle top: a warped disk
        spec.add("top", superellipse_warp(revolve([(1.0, z0), (1.0, H)], sections=64), p, a, b))
    c = 2.0 ** (-1.0 / p)  # superellipse point in the 45 degree parameter direction (1 for a rectangle)
    corner = np.array([a * c, b * c])
    inset = 0.08 * b
    for name, sx, sy in _CORNERS:
        spec.kp(f"top_{name}", (sx * (corner[0] - inset), sy * (corner[1] - inset), H))
    spec.kp("top_center", (0.0, 0.0, H))

    if structure == "four_legs":
        spec.style.update(_four_legs(spec, rng, kind, a, b, z0, t, p, corner))
    else:
        spec.style.update(
            _pedestal(spec, rng, a, b, z0, t) if structure == "pedestal" else _panels(spec, rng, a, b, z0, t)
        )
        for name, _, _ in _CORNERS:
            spec.kp(f"leg_{name}_foot", None)
    spec.style["z_scale"] = fit_sphere(spec)
    return spec
