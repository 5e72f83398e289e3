"""Bottle generator.

Parts (level-1): ``body`` (the container up to its shoulder), ``neck`` (neck tube, plus the collar or lip
ring when present), ``cap`` (foil capsule, screw cap, stopper or cork), ``handle`` (jug handle; jugs only).

Keypoints (8): ``cap_top`` (centre of the cap's top), ``neck_front`` (front, -y, side of the neck half
way up its visible length), ``shoulder_front``, ``shoulder_back``, ``shoulder_left``, ``shoulder_right``
(body surface on the shoulder, in the -y, +y, +x and -x directions), ``base_front`` (front of the body
just above the floor), ``handle_top`` (top of the handle's outer surface; absent without a handle).

Style variation:
- wine: slim cylinder, sharp (Bordeaux) or long sloping (Burgundy) shoulder, long tapering neck, foil
  capsule;
- water: wider body (plain, waisted or grooved), short neck with a collar ring, screw cap;
- jug: squat round or rounded-square body, domed shoulder, short wide neck, screw cap, strap handle at
  the back;
- square: rounded-square or oblong section (superellipse, power 4-10), short shoulder, screw cap or a
  tall stopper;
- flask: spherical body with a long neck and a cork or screw cap, or a flat oval hip flask;
- continuous: heights, radii, base rounding, shoulder length and curvature, neck length/radius/taper,
  cap height and radius.
"""

from __future__ import annotations

import numpy as np

from featurenerf_ns.data.procedural.geometry import ShapeSpec, fit_sphere, loft, pick, revolve, superellipse_warp

PARTS = ["body", "neck", "cap", "handle"]
KEYPOINTS = [
    ("cap_top", "cap"),
    ("neck_front", "neck"),
    ("shoulder_front", "body"),
    ("shoulder_back", "body"),
    ("shoulder_left", "body"),
    ("shoulder_right", "body"),
    ("base_front", "body"),
    ("handle_top", "handle"),
]
_STYLES = {"wine": 1.0, "water": 1.0, "jug": 0.8, "square": 0.8, "flask": 0.8}
# Unit directions (x, y) of the named sides: front is -y, the bottle's left is +x.
_SIDES = {"front": (0, -1), "back": (0, 1), "left": (1, 0), "right": (-1, 0)}


def _arc(r_wide: float, z_wide: float, r_narrow: float, z_narrow: float, e: float, n: int = 12) -> np.ndarray:
    """Superellipse quarter from (r_wide, z_wide), where it is vertical, to (r_narrow, z_narrow), where it
    is flat. ``e``=1 gives a straight cone, 2 an elliptic dome, larger values a boxier curve."""
    t = np.linspace(0.0, 1.0, n)
    r = r_narrow + (r_wide - r_narrow) * (1.0 - t**e) ** (1.0 / e)
    return np.column_stack([r, z_wide + (z_narrow - z_wide) * t])


def _on_profile(profile: np.ndarray, z: float, side: str, ratio: float = 1.0) -> np.ndarray:
    """Surface point at height ``z`` on the named side of a (warped) revolved profile. Sides are vertex
    columns of ``revolve`` (sections divisible by 4), so linear interpolation is exact."""
    r = np.interp(z, profile[:, 1], profile[:, 0])
    dx, dy = _SIDES[side]
    return np.array([dx * r, dy * r * ratio, z])


def _catmull_rom(points: np.ndarray, n: int = 8) -> np.ndarray:
    """Smooth curve through ``points`` (n samples per segment)."""
    p = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    t = np.linspace(0.0, 1.0, n, endpoint=False)[:, None]
    out = [
        0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (3 * p1 - p0 - 3 * p2 + p3) * t**3)
        for p0, p1, p2, p3 in zip(p[:-3], p[1:-2], p[2:-1], p[3:])
    ]
    return np.vstack(out + [points[-1:]])


def _params(style: str, rng: np.random.Generator) -> dict:
    """Samples the shape parameters of one style (units: roughly a unit-high bottle). Keys: ``R`` body
    radius (half-width along x), ``ratio``/``power`` superellipse section (y/x ratio, exponent), ``rb``
    base radius, ``z_heel``/``e_heel`` height/curvature of the rounded base, ``z_sh`` shoulder start,
    ``hs``/``e_sh`` shoulder height/curvature, ``rn``/``rn_base`` neck radius at top/foot, ``neck_len``
    visible neck length, ``cap``/``hc``/``rc`` cap type, height and radius."""
    u = rng.uniform
    if style == "wine":
        sharp = bool(rng.random() < 0.5)
        R = u(0.095, 0.125)
        rn = R * u(0.36, 0.44)
        return dict(
            R=R,
            rb=R * u(0.88, 0.95),
            z_heel=u(0.01, 0.025),
            e_heel=2.0,
            z_sh=u(0.48, 0.6),
            hs=u(0.05, 0.09) if sharp else u(0.14, 0.24),
            e_sh=u(2.0, 3.0) if sharp else u(1.1, 1.6),
            rn=rn,
            rn_base=rn * u(1.05, 1.2),
            neck_len=u(0.2, 0.3),
            cap="capsule",
            hc=u(0.08, 0.12),
            rc=rn * 1.06,
            shoulder="sharp" if sharp else "sloped",
        )
    if style == "water":
        R = u(0.12, 0.17)
        rn = R * u(0.3, 0.4)
        return dict(
            R=R,
            rb=R * u(0.8, 0.92),
            z_heel=u(0.02, 0.05),
            e_heel=u(2.0, 3.0),
            z_sh=u(0.55, 0.72),
            hs=u(0.08, 0.2),
            e_sh=u(1.2, 2.5),
            wall=pick(rng, {"plain": 1, "waist": 1, "grooves": 1}),
            rn=rn,
            neck_len=u(0.03, 0.06),
            collar=True,
            cap="screw",
            hc=u(0.04, 0.07),
            rc=rn * u(1.12, 1.25),
        )
    if style == "jug":
        z_sh, hs = u(0.35, 0.5), u(0.15, 0.25)
        R = u(0.36, 0.42) * (z_sh + hs)
        rn = R * u(0.3, 0.4)
        return dict(
            R=R,
            rb=R * u(0.85, 0.93),
            z_heel=u(0.03, 0.06),
            e_heel=2.0,
            z_sh=z_sh,
            hs=hs,
            e_sh=u(1.6, 2.4),
            power=2.0 if rng.random() < 0.5 else u(3.0, 4.5),
            rn=rn,
            neck_len=u(0.08, 0.12),
            cap="screw",
            hc=u(0.04, 0.07),
            rc=rn * u(1.1, 1.2),
            handle=True,
        )
    if style == "square":
        R, q = u(0.13, 0.2), u(0.45, 1.0)
        rn = R * min(u(0.28, 0.38), 0.6 * q)  # the neck foot must stay inside the flat side
        stopper = bool(rng.random() < 0.5)
        return dict(
            R=R,
            ratio=q,
            power=u(4.0, 10.0),
            rb=R * u(0.9, 0.97),
            z_heel=u(0.01, 0.03),
            e_heel=2.0,
            z_sh=u(0.5, 0.7),
            hs=u(0.04, 0.1),
            e_sh=u(1.5, 3.0),
            rn=rn,
            neck_len=u(0.04, 0.12),
            cap="stopper" if stopper else "screw",
            hc=u(0.08, 0.16) if stopper else u(0.05, 0.09),
            rc=rn * (u(1.3, 2.0) if stopper else u(1.15, 1.4)),
        )
    # flask: spherical with a long neck, or a flat hip flask
    if rng.random() < 0.5:
        R = u(0.2, 0.28)
        z_heel = R * u(0.7, 0.9)
        rn = R * u(0.2, 0.3)
        cork = bool(rng.random() < 0.6)
        return dict(
            variant="round",
            R=R,
            rb=R * u(0.4, 0.6),
            z_heel=z_heel,
            e_heel=2.0,
            z_sh=z_heel + R * u(0.0, 0.15),
            hs=R * u(0.8, 1.0),
            e_sh=2.0,
            rn=rn,
            neck_len=u(0.15, 0.3),
            lip=cork,
            cap="cork" if cork else "screw",
            hc=u(0.05, 0.09),
            rc=rn * (0.95 if cork else u(1.1, 1.25)),
        )
    R, q = u(0.18, 0.26), u(0.3, 0.45)
    rn = R * q * u(0.35, 0.48)
    return dict(
        variant="flat",
        R=R,
        ratio=q,
        power=u(2.2, 3.5),
        rb=R * u(0.7, 0.85),
        z_heel=R * u(0.2, 0.4),
        e_heel=2.0,
        z_sh=u(0.45, 0.6),
        hs=R * u(0.3, 0.5),
        e_sh=u(1.8, 2.5),
        rn=rn,
        neck_len=u(0.03, 0.06),
        cap="screw",
        hc=u(0.05, 0.08),
        rc=rn * u(1.15, 1.3),
    )


def _body_profile(P: dict, rng: np.random.Generator) -> np.ndarray:
    """(r, z) body profile: rounded heel, wall (plain / waisted / grooved), shoulder closing to a small
    ring hidden inside the neck."""
    R, z_heel, z_sh = P["R"], P["z_heel"], P["z_sh"]
    heel = _arc(R, z_heel, P["rb"], 0.0, P["e_heel"])[::-1]
    shoulder = _arc(R, z_sh, 0.5 * P["rn_base"], z_sh + P["hs"], P["e_sh"])
    wall = np.empty((0, 2))
    if P.get("wall") == "waist":
        z = np.linspace(z_heel, z_sh, 12)[1:-1]
        depth = rng.uniform(0.07, 0.14)
        wall = np.column_stack([R * (1 - depth * np.sin(np.pi * (z - z_heel) / (z_sh - z_heel)) ** 2), z])
    elif P.get("wall") == "grooves":
        n, gw = int(rng.integers(2, 5)), 0.012
        for zg in np.linspace(z_heel + 0.3 * (z_sh - z_heel), z_sh - 0.1 * (z_sh - z_heel), n):
            wall = np.vstack([wall, [(R, zg - gw), (0.94 * R, zg), (R, zg + gw)]])
    prof = np.vstack([heel, wall, shoulder])
    keep = np.concatenate([[True], np.diff(prof[:, 1]) > 1e-9])  # strictly increasing heights
    return prof[keep]


def _handle(spec: ShapeSpec, rng, P: dict, z_att: float, z_low: float) -> None:
    """Strap handle at the back (+y): leaves the neck, arches up and out, runs down and enters the body."""
    R, rn = P["R"], P["rn"]
    Y = R + rng.uniform(0.09, 0.14)  # outermost reach
    rise, h = rng.uniform(0.01, 0.04), z_att - z_low
    yz = np.array(
        [
            [0.3 * rn, z_att],
            [0.5 * (rn + Y), z_att + rise],
            [Y, z_att - 0.25 * h],
            [Y - 0.2 * (Y - R), z_low + 0.2 * h],
            [0.55 * R, z_low],
        ]
    )
    path = _catmull_rom(yz)
    path = np.column_stack([np.zeros(len(path)), path])
    w, t = rng.uniform(0.05, 0.08), rng.uniform(0.022, 0.03)
    # loft's first section axis lies in the path plane when the overall direction is near vertical.
    d = (path[-1] - path[0]) / np.linalg.norm(path[-1] - path[0])
    radii = (t / 2, w / 2) if abs(d[2]) >= 0.9 else (w / 2, t / 2)
    mesh = loft(path, [radii] * len(path), sections=16)
    spec.add("handle", mesh)
    tri = mesh.triangles
    spec.kp("handle_top", tri[np.argmax(tri[:, :, 2].min(axis=1))].mean(axis=0))  # centre of the highest face


def build(rng: np.random.Generator) -> ShapeSpec:
    spec = ShapeSpec()
    style = pick(rng, _STYLES)
    P = _params(style, rng)
    P.setdefault("rn_base", P["rn"])
    q, power = P.get("ratio", 1.0), P.get("power", 2.0)

    # Body.
    prof = _body_profile(P, rng)
    body = revolve(prof, sections=64 if power > 2 else 48)
    spec.add("body", body if power == 2 and q == 1 else superellipse_warp(body, power, 1.0, q))
    z_sh, hs = P["z_sh"], P["hs"]
    z_top = prof[-1, 1]
    z_kp = z_sh + 0.4 * hs
    for side in ("front", "back", "left", "right"):
        spec.kp(f"shoulder_{side}", _on_profile(prof, z_kp, side, q))
    spec.kp("base_front", _on_profile(prof, min(P["z_heel"] + 0.08 * (z_sh - P["z_heel"]), 0.12 * z_sh), "front", q))

    # Neck: starts buried in the shoulder, free between the body and the collar / lip / cap.
    rn, hc, rc = P["rn"], P["hc"], P["rc"]
    z0, z_free = z_sh + 0.3 * hs, z_top + P["neck_len"]
    outer_cap = P["cap"] in ("capsule", "screw")
    z_cap = z_free  # bottom of a sleeve cap
    z_vis = z_free  # top of the plain neck surface
    if P.get("collar"):  # support ring of a PET bottle, just under the cap
        ct = rng.uniform(0.008, 0.014)
        spec.add("neck", revolve([(1.3 * rn, z_free), (1.3 * rn, z_free + ct)], sections=32))
        z_cap = z_free + ct + rng.uniform(0.005, 0.015)
    if P.get("lip"):  # rolled lip at the mouth, standing slightly proud of the neck's top face
        spec.add("neck", revolve([(1.18 * rn, z_free - 0.02), (1.18 * rn, z_free + 0.003)], sections=32))
        z_vis = z_free - 0.02
    neck_profile = [(P["rn_base"], z0), (rn, z_free)] + ([(rn, z_cap + 0.7 * hc)] if outer_cap else [])
    neck = np.array(neck_profile)
    spec.add("neck", revolve(neck, sections=32))
    spec.kp("neck_front", _on_profile(neck, 0.5 * (z_top + z_vis), "front"))

    # Cap.
    if outer_cap:  # capsule / screw cap sleeved over the neck top
        z1 = z_cap + hc
        cap = [(rc, z_cap), (rc, z1 - 0.08 * hc), (0.88 * rc, z1)]
    elif P["cap"] == "stopper":  # plug in the mouth with a wide knob above it
        z1 = z_free + hc
        cap = [
            (0.8 * rn, z_free - 0.3 * hc),
            (0.8 * rn, z_free + 0.12 * hc),
            (rc, z_free + 0.3 * hc),
            (rc, z1 - 0.25 * hc),
            (0.55 * rc, z1),
        ]
    else:  # cork: tapered plug sticking out of the mouth
        z1 = z_free + 0.55 * hc
        cap = [(0.82 * rn, z_free - 0.45 * hc), (rc, z1)]
    spec.add("cap", revolve(cap, sections=32))
    spec.kp("cap_top", (0.0, 0.0, z1))

    if P.get("handle"):
        _handle(spec, rng, P, z_att=0.5 * (z_top + z_free), z_low=z_sh - rng.uniform(0.3, 0.5) * (z_sh - P["z_heel"]))
    else:
        spec.kp("handle_top", None)

    spec.style.update(
        {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in P.items() if k not in ("rn_base",)}
    )
    spec.style.update(style=style, section="round" if power == 2 and q == 1 else "superellipse", height=float(z1))
    spec.style["z_scale"] = fit_sphere(spec)
    spec.keypoints = {name: spec.keypoints[name] for name, _ in KEYPOINTS}  # canonical order
    return spec
