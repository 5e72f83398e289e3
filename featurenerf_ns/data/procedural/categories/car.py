"""Car generator.

Parts (level-1, as ShapeNet-part): ``body`` (lower body with wheel arches, pickup bed walls and
tailgate, rear spoiler), ``roof`` (the cabin / greenhouse above the belt line), ``hood`` (the front lid
panel on top of the front section), ``wheel`` (the four wheels).

Keypoints (12): ``wheel_front_left``, ``wheel_front_right``, ``wheel_rear_left``, ``wheel_rear_right``
(centre of each wheel's outer hub face), ``front_left_corner``, ``front_right_corner``,
``rear_left_corner``, ``rear_right_corner`` (body top surface near its four corners; for pickups the
rear ones sit on the bed side walls), ``roof_front_left``, ``roof_front_right``, ``roof_rear_left``,
``roof_rear_right`` (roof top surface near its four corners).

Style variation: body style (sedan, hatchback, SUV, pickup with open bed, sports coupe, van), length,
width, belt-line height, ground clearance, wheel radius and width, wheelbase and overhangs, hood
length, cabin position and length, windshield and rear-window slope, cabin height and tumblehome,
nose drop, trunk height, optional rear spoiler.
"""

from __future__ import annotations

import numpy as np
import trimesh

from featurenerf_ns.data.procedural.geometry import ShapeSpec, box, hexahedron, revolve

PARTS = ["body", "roof", "hood", "wheel"]
KEYPOINTS = [
    ("wheel_front_left", "wheel"),
    ("wheel_front_right", "wheel"),
    ("wheel_rear_left", "wheel"),
    ("wheel_rear_right", "wheel"),
    ("front_left_corner", "body"),
    ("front_right_corner", "body"),
    ("rear_left_corner", "body"),
    ("rear_right_corner", "body"),
    ("roof_front_left", "roof"),
    ("roof_front_right", "roof"),
    ("roof_rear_left", "roof"),
    ("roof_rear_right", "roof"),
]

STYLES = ("sedan", "hatchback", "suv", "pickup", "coupe", "van")

# Per style, ranges (metres / fractions of length) drawn uniformly:
# length, width, wheel radius, clearance, belt height, cabin height, hood end (fraction of length from
# the nose), rear end of the cabin (fraction of length from the tail), windshield run, rear-window run,
# nose drop below the belt line, front overhang (fraction of length).
_RANGES = {
    "sedan": dict(
        L=(4.4, 5.1),
        W=(1.75, 1.9),
        R=(0.31, 0.35),
        clr=(0.14, 0.19),
        belt=(0.86, 0.96),
        cab=(0.44, 0.54),
        hood=(0.28, 0.34),
        tail=(0.19, 0.25),
        ws=(0.55, 0.85),
        rw=(0.45, 0.75),
        drop=(0.08, 0.16),
        fo=(0.17, 0.21),
    ),
    "hatchback": dict(
        L=(3.7, 4.3),
        W=(1.65, 1.8),
        R=(0.29, 0.33),
        clr=(0.14, 0.18),
        belt=(0.86, 0.96),
        cab=(0.50, 0.60),
        hood=(0.24, 0.29),
        tail=(0.0, 0.0),
        ws=(0.55, 0.8),
        rw=(0.2, 0.45),
        drop=(0.08, 0.15),
        fo=(0.16, 0.2),
    ),
    "suv": dict(
        L=(4.4, 5.0),
        W=(1.85, 2.0),
        R=(0.36, 0.42),
        clr=(0.22, 0.28),
        belt=(1.08, 1.22),
        cab=(0.56, 0.7),
        hood=(0.25, 0.3),
        tail=(0.0, 0.0),
        ws=(0.45, 0.65),
        rw=(0.06, 0.2),
        drop=(0.04, 0.1),
        fo=(0.16, 0.2),
    ),
    "pickup": dict(
        L=(5.0, 5.8),
        W=(1.85, 2.0),
        R=(0.36, 0.4),
        clr=(0.22, 0.28),
        belt=(1.2, 1.35),
        cab=(0.58, 0.7),
        hood=(0.25, 0.3),
        tail=(0.0, 0.0),
        ws=(0.45, 0.6),
        rw=(0.03, 0.08),
        drop=(0.03, 0.08),
        fo=(0.15, 0.18),
    ),
    "coupe": dict(
        L=(4.2, 4.7),
        W=(1.85, 2.0),
        R=(0.31, 0.35),
        clr=(0.10, 0.13),
        belt=(0.74, 0.84),
        cab=(0.34, 0.42),
        hood=(0.36, 0.44),
        tail=(0.09, 0.15),
        ws=(0.75, 1.0),
        rw=(0.75, 1.15),
        drop=(0.1, 0.17),
        fo=(0.17, 0.2),
    ),
    "van": dict(
        L=(4.6, 5.3),
        W=(1.9, 2.0),
        R=(0.32, 0.36),
        clr=(0.15, 0.2),
        belt=(0.98, 1.1),
        cab=(0.85, 1.05),
        hood=(0.11, 0.16),
        tail=(0.0, 0.0),
        ws=(0.45, 0.75),
        rw=(0.03, 0.08),
        drop=(0.15, 0.3),
        fo=(0.15, 0.18),
    ),
}

_END = 0.07  # length of the rounded nose / tail sections of the lower body
_TUCK = 0.03  # the body sides lean inwards by this much from the sill to the shoulder


def _section_loft(sections) -> trimesh.Trimesh:
    """Closed solid through octagonal cross-sections ``(y, half_width, z_bottom, z_top, chamfer_bottom,
    chamfer_top)`` ordered along +y; the ends are capped with a fan."""
    rings = []
    for y, hw, zb, zt, cb, ct in sections:
        hs = hw - _TUCK
        xz = [
            (hw - cb, zb),
            (hw, zb + cb),
            (hs, zt - ct),
            (hs - ct, zt),
            (ct - hs, zt),
            (-hs, zt - ct),
            (-hw, zb + cb),
            (cb - hw, zb),
        ]
        rings.append(np.array([(x, y, z) for x, z in xz]))
    n, m = len(rings), len(rings[0])
    verts = np.concatenate(rings + [rings[0].mean(0, keepdims=True), rings[-1].mean(0, keepdims=True)])
    faces = []
    for i in range(n - 1):
        for j in range(m):
            a, b = i * m + j, i * m + (j + 1) % m
            faces += [(a, b, b + m), (a, b + m, a + m)]
    last = (n - 1) * m
    for j in range(m):
        faces += [(n * m, (j + 1) % m, j), (n * m + 1, last + j, last + (j + 1) % m)]
    mesh = trimesh.Trimesh(verts, np.array(faces), process=False)
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def _top_point(sections, k: int, t: float, x_frac: float) -> np.ndarray:
    """Point on the flat top strip between sections ``k`` and ``k + 1`` (the strip is a planar
    trapezoid), at fraction ``t`` along y and ``x_frac`` of the strip's half-width."""
    (y0, hw0, _, zt0, _, ct0), (y1, hw1, _, zt1, _, ct1) = sections[k], sections[k + 1]
    half = (1 - t) * (hw0 - ct0) + t * (hw1 - ct1) - _TUCK
    return np.array([x_frac * half, (1 - t) * y0 + t * y1, (1 - t) * zt0 + t * zt1])


def _wheel(center, outward: float, radius: float, width: float) -> tuple[trimesh.Trimesh, np.ndarray]:
    """Tyre + rim with a recessed flat hub face; returns the mesh and the hub-face centre."""
    r, w = radius, width / 2
    recess = 0.25 * w
    profile = [
        (0.55 * r, -w),
        (0.9 * r, -w),
        (r, -0.6 * w),
        (r, 0.6 * w),
        (0.9 * r, w),
        (0.62 * r, w),
        (0.55 * r, w - recess),
    ]
    axis = np.array([outward, 0.0, 0.0])
    mesh = revolve(profile, center=center, axis=axis, sections=32)
    return mesh, np.asarray(center, dtype=np.float64) + axis * (w - recess)


def build(rng: np.random.Generator) -> ShapeSpec:
    spec = ShapeSpec()
    style = str(rng.choice(STYLES))
    p = {k: float(rng.uniform(*v)) for k, v in _RANGES[style].items()}
    L, W, R, clr, belt = p["L"], p["W"], p["R"], p["clr"], p["belt"]
    hw = W / 2
    y0, y1 = -L / 2, L / 2  # nose, tail
    y_ws = y0 + p["hood"] * L  # windshield base = rear end of the hood
    y_wf = y0 + p["fo"] * L
    y_wr = y1 - rng.uniform(0.18, 0.25) * L
    wheel_w = rng.uniform(0.19, 0.25) * (1.15 if style in ("suv", "pickup", "coupe") else 1.0)
    # Keep the body top well above the wheel tops so that tyres never poke through it.
    z_nose = max(belt - p["drop"], 2 * R + 0.08)
    z_deck = max(belt + (rng.uniform(0.0, 0.06) if style == "sedan" else rng.uniform(-0.02, 0.03)), 2 * R + 0.08)
    ct = rng.uniform(0.06, 0.12)  # shoulder chamfer
    cb = rng.uniform(0.05, 0.1)
    ra = R + rng.uniform(0.04, 0.07)  # wheel-arch radius
    y_r2 = y1 - _END - 0.1  # start of the flat rear strip carrying the rear corner keypoints

    # Cabin extent (roof bottom at the belt line, y_ws .. y_rb) and body top profile (y, z) knots.
    y_h0 = y0 + _END + rng.uniform(0.12, 0.25)  # hood front edge
    top = [(y0, z_nose - 0.07), (y0 + _END, z_nose - 0.015), (y_h0, z_nose), (y_ws, belt)]
    if style in ("sedan", "coupe"):
        y_rb = y1 - p["tail"] * L
        top += [(y_rb, belt), (y_rb + 0.12, z_deck), (y_r2, z_deck), (y1 - _END, z_deck), (y1, z_deck - 0.08)]
    elif style == "pickup":
        y_cb = y_ws + rng.uniform(0.2, 0.32) * L  # back of the cab (single to crew cab)
        y_rb = y_cb - 0.02
        z_floor = max(belt - rng.uniform(0.4, 0.5), R + ra + 0.12)  # bed floor above the rear arches
        top += [(y_cb, belt), (y_cb + 0.03, z_floor), (y_r2, z_floor), (y1 - _END, z_floor), (y1, z_floor - 0.06)]
    else:  # hatchback, SUV, van: cabin reaches (almost) the tail
        y_rb = y_r2 - 0.02
        top += [(y_rb, belt), (y_r2, z_deck), (y1 - _END, z_deck), (y1, z_deck - 0.07)]
    ty, tz = np.array(top).T

    # Sections: profile knots plus wheel-arch sections; the arches raise the bottom above each wheel.
    arch = np.concatenate([[-ra - 0.03], ra * np.array([-1.0, -0.8, -0.5, 0.0, 0.5, 0.8, 1.0]), [ra + 0.03]])
    ys = np.unique(np.round(np.concatenate([ty, y_wf + arch, y_wr + arch]), 3))
    hw_y = np.interp(
        ys, [y0, y0 + _END, y0 + 0.3, y1 - 0.3, y1 - _END, y1], hw * np.array([0.88, 0.98, 1.0, 1.0, 0.99, 0.92])
    )
    zb_y = np.interp(
        ys,
        [y0, y0 + _END, y0 + 0.25, y1 - 0.25, y1 - _END, y1],
        [clr + 0.12, clr + 0.05, clr, clr, clr + 0.05, clr + 0.12],
    )
    zt_y = np.interp(ys, ty, tz)
    for yw in (y_wf, y_wr):
        d = np.abs(ys - yw)
        inside = d <= ra + 1e-9
        zb_y[inside] = np.maximum(zb_y[inside], R + np.sqrt(np.maximum(ra**2 - d[inside] ** 2, 0.0)))
    zb_y = np.minimum(zb_y, zt_y - 0.12)
    sections = []
    for y, h, zb, zt in zip(ys, hw_y, zb_y, zt_y):
        c = min(ct, 0.3 * (zt - zb))
        sections.append((y, h, zb, zt, min(cb, 0.3 * (zt - zb)), c))
    spec.add("body", _section_loft(sections))

    # Body top corner keypoints: flat strips right behind the nose and right before the tail.
    k_rear = int(np.argmin(np.abs(ys - (y1 - _END)))) - 1
    xf = 0.85
    spec.kp("front_left_corner", _top_point(sections, 1, 0.4, xf))
    spec.kp("front_right_corner", _top_point(sections, 1, 0.4, -xf))
    if style == "pickup":
        wall_t = rng.uniform(0.05, 0.08)
        z_wall = belt - rng.uniform(0.02, 0.06)
        x_out = hw - _TUCK - 0.5 * ct  # the walls pierce the shoulder chamfer
        yb0, yb1 = y_cb - 0.02, y1 - 0.01  # bed walls, from inside the cab's body to the tail
        for s in (1, -1):
            spec.add(
                "body",
                box(
                    (s * (x_out - wall_t / 2), (yb0 + yb1) / 2, (z_floor - 0.1 + z_wall) / 2),
                    (wall_t, yb1 - yb0, z_wall - z_floor + 0.1),
                ),
            )
        spec.add(
            "body",
            box(
                (0, y1 - 0.02 - 0.03, (z_floor - 0.05 + z_wall - 0.02) / 2),
                (2 * (x_out - wall_t / 2), 0.06, z_wall - 0.02 - z_floor + 0.05),
            ),
        )
        spec.kp("rear_left_corner", (x_out - wall_t / 2, y1 - 0.12, z_wall))
        spec.kp("rear_right_corner", (-(x_out - wall_t / 2), y1 - 0.12, z_wall))
    else:
        spec.kp("rear_left_corner", _top_point(sections, k_rear, 0.5, xf))
        spec.kp("rear_right_corner", _top_point(sections, k_rear, 0.5, -xf))

    # Roof: trapezoid greenhouse whose bottom sinks into the body below the belt line.
    cab_h = p["cab"]
    cab_len = y_rb - y_ws
    ws_run, rw_run = p["ws"], p["rw"]
    scale = min(1.0, 0.65 * cab_len / (ws_run + rw_run))
    ws_run, rw_run = ws_run * scale, rw_run * scale
    hw_b = hw - _TUCK - ct - 0.02
    hw_t = hw_b - rng.uniform(0.08, 0.18)
    zr0, zr1 = belt - 0.04, belt + cab_h
    yt0, yt1 = y_ws + ws_run, y_rb - rw_run
    spec.add(
        "roof",
        hexahedron(
            np.array(
                [
                    [-hw_b, y_ws, zr0],
                    [hw_b, y_ws, zr0],
                    [hw_b, y_rb, zr0],
                    [-hw_b, y_rb, zr0],
                    [-hw_t, yt0, zr1],
                    [hw_t, yt0, zr1],
                    [hw_t, yt1, zr1],
                    [-hw_t, yt1, zr1],
                ]
            )
        ),
    )
    for name, fy, sx in (
        ("roof_front_left", 0.12, 1),
        ("roof_front_right", 0.12, -1),
        ("roof_rear_left", 0.88, 1),
        ("roof_rear_right", 0.88, -1),
    ):
        spec.kp(name, (sx * 0.8 * hw_t, yt0 + fy * (yt1 - yt0), zr1))

    # Hood: thin raised panel on the front section, running under the windshield.
    th = rng.uniform(0.015, 0.03)
    hw_h = hw_b - 0.04
    y_he = y_ws + ws_run * (0.06 + th) / (cab_h + 0.04)
    z_he = z_nose + (belt - z_nose) * (y_he - y_h0) / (y_ws - y_h0)
    spec.add(
        "hood",
        hexahedron(
            np.array(
                [
                    [-hw_h, y_h0, z_nose - 0.03],
                    [hw_h, y_h0, z_nose - 0.03],
                    [hw_h, y_he, z_he - 0.03],
                    [-hw_h, y_he, z_he - 0.03],
                    [-hw_h, y_h0, z_nose + th],
                    [hw_h, y_h0, z_nose + th],
                    [hw_h, y_he, z_he + th],
                    [-hw_h, y_he, z_he + th],
                ]
            )
        ),
    )

    # Optional rear spoiler on the trunk lid.
    spoiler = style in ("sedan", "coupe") and bool(rng.random() < (0.5 if style == "coupe" else 0.15))
    if spoiler:
        ys_p, h_sp = y1 - 0.3, rng.uniform(0.1, 0.2)
        for s in (1, -1):
            spec.add("body", box((s * 0.55 * hw, ys_p, z_deck + h_sp / 2 - 0.02), (0.05, 0.1, h_sp + 0.04)))
        spec.add("body", box((0, ys_p + 0.02, z_deck + h_sp + 0.01), (1.6 * hw, 0.22, 0.03)))

    # Wheels: outer face near the body side; hub faces stay clear of the body under the arches.
    inset = rng.uniform(-0.02, 0.03)
    for name, yw in (("front", y_wf), ("rear", y_wr)):
        for side, sign in (("left", 1.0), ("right", -1.0)):
            mesh, hub = _wheel((sign * (hw - wheel_w / 2 - inset), yw, R), sign, R, wheel_w)
            spec.add("wheel", mesh)
            spec.kp(f"wheel_{name}_{side}", hub)

    spec.style.update(
        style=style,
        length=L,
        width=W,
        belt_height=belt,
        roof_height=belt + cab_h,
        wheel_radius=R,
        wheel_width=wheel_w,
        wheelbase=y_wr - y_wf,
        clearance=clr,
        hood_length=y_ws - y0,
        cabin_length=cab_len,
        windshield_run=ws_run,
        rear_window_run=rw_run,
        spoiler=spoiler,
    )
    return spec
