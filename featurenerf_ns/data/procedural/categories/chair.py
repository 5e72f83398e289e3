"""Chair generator.

Parts (level-1, as ShapeNet-part): ``back``, ``seat``, ``leg`` (legs, stretchers, swivel column,
spokes and casters, or a solid plinth), ``arm`` (arm rests and their supports).

Keypoints (12): ``seat_front_left``, ``seat_front_right``, ``seat_back_left``, ``seat_back_right``
(seat top near its corners), ``back_top_left``, ``back_top_right`` (top of the back near its ends),
``leg_front_left_foot`` ... ``leg_back_right_foot`` (outer face of each corner leg just above the floor;
absent for swivel and plinth bases), ``arm_front_left``, ``arm_front_right`` (arm rest top near its front
end; absent without arms).

Style variation: base (four straight/splayed square or round legs with or without stretchers, swivel
column with 5 spokes and casters, solid plinth), back (solid panel, vertical slats, horizontal ladder
rails), arms or none, back tilt and height, seat size/thickness/height, leg thickness.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from featurenerf_ns.data.procedural.geometry import ShapeSpec, box, cylinder, hexahedron, sphere

PARTS = ["back", "seat", "leg", "arm"]
KEYPOINTS = [
    ("seat_front_left", "seat"),
    ("seat_front_right", "seat"),
    ("seat_back_left", "seat"),
    ("seat_back_right", "seat"),
    ("back_top_left", "back"),
    ("back_top_right", "back"),
    ("leg_front_left_foot", "leg"),
    ("leg_front_right_foot", "leg"),
    ("leg_back_left_foot", "leg"),
    ("leg_back_right_foot", "leg"),
    ("arm_front_left", "arm"),
    ("arm_front_right", "arm"),
]


def _tilted_slab(x0, x1, y0, thickness, z0, z1, tilt):
    """Slab spanning x0..x1, rising from z0 to z1, leaning backwards (+y) by ``tilt`` radians."""
    dy = (z1 - z0) * np.tan(tilt)
    y1 = y0 + thickness
    return hexahedron(
        np.array(
            [
                [x0, y0, z0],
                [x1, y0, z0],
                [x1, y1, z0],
                [x0, y1, z0],
                [x0, y0 + dy, z1],
                [x1, y0 + dy, z1],
                [x1, y1 + dy, z1],
                [x0, y1 + dy, z1],
            ]
        )
    )


def build(rng: np.random.Generator) -> ShapeSpec:
    spec = ShapeSpec()
    w = rng.uniform(0.40, 0.62)  # seat width (x)
    d = rng.uniform(0.38, 0.56)  # seat depth (y)
    t = rng.uniform(0.03, 0.09)  # seat thickness
    h = rng.uniform(0.36, 0.50)  # seat top height
    base = rng.choice(["four_legs", "four_legs", "four_legs", "swivel", "plinth"])
    back_style = rng.choice(["solid", "slats", "ladder"])
    has_arms = bool(rng.random() < 0.4)
    back_h = rng.uniform(0.30, 0.62)
    tilt = np.deg2rad(rng.uniform(0.0, 16.0))
    back_t = rng.uniform(0.025, 0.06)
    spec.style.update(
        base=str(base),
        back=str(back_style),
        arms=has_arms,
        seat_w=w,
        seat_d=d,
        seat_h=h,
        back_h=back_h,
        back_tilt_deg=float(np.rad2deg(tilt)),
    )

    # Seat: the occupant faces -y, so the back sits at +y.
    z_bottom = h - t
    spec.add("seat", box((0, 0, h - t / 2), (w, d, t)))
    ix, iy = 0.42 * w, 0.42 * d
    spec.kp("seat_front_left", (ix, -iy, h))
    spec.kp("seat_front_right", (-ix, -iy, h))
    # Back: starts slightly inside the seat, leans back.
    y0 = d / 2 - back_t
    iy_back = y0 - 0.06 * d  # just in front of the back
    spec.kp("seat_back_left", (ix, iy_back, h))
    spec.kp("seat_back_right", (-ix, iy_back, h))
    zb0, zb1 = h - 0.5 * t, h + back_h
    dy_top = (zb1 - zb0) * np.tan(tilt)
    if back_style == "solid":
        spec.add("back", _tilted_slab(-w / 2, w / 2, y0, back_t, zb0, zb1, tilt))
        top_z = zb1
    else:
        post_w = rng.uniform(0.03, 0.05)
        rail_h = rng.uniform(0.04, 0.09)
        for sx in (-1, 1):
            x_in, x_out = sx * (w / 2 - post_w), sx * w / 2
            spec.add("back", _tilted_slab(min(x_in, x_out), max(x_in, x_out), y0, back_t, zb0, zb1 - 0.002, tilt))
        # The top rail overlaps the posts (slightly thicker, so no coplanar faces).
        frac0 = (zb1 - rail_h - zb0) / (zb1 - zb0)
        spec.add(
            "back",
            _tilted_slab(
                -w / 2 - 0.004, w / 2 + 0.004, y0 + frac0 * dy_top - 0.003, back_t + 0.006, zb1 - rail_h, zb1, tilt
            ),
        )
        top_z = zb1
        inner = w / 2 - post_w
        if back_style == "slats":
            n = int(rng.integers(2, 6))
            slat_w = rng.uniform(0.02, 0.045)
            for x in np.linspace(-inner + slat_w, inner - slat_w, n):
                spec.add(
                    "back",
                    _tilted_slab(
                        x - slat_w / 2,
                        x + slat_w / 2,
                        y0 + 0.004,
                        back_t - 0.008,
                        zb0 + 0.01,
                        zb1 - rail_h + 0.01,
                        tilt,
                    ),
                )
        else:
            n = int(rng.integers(1, 4))
            for k in range(n):
                zc = zb0 + (k + 1) * (zb1 - rail_h - zb0) / (n + 1)
                f = (zc - 0.02 - zb0) / (zb1 - zb0)
                spec.add(
                    "back",
                    _tilted_slab(
                        -inner - 0.005,
                        inner + 0.005,
                        y0 + f * dy_top + 0.004,
                        back_t - 0.008,
                        zc - 0.02,
                        zc + 0.02,
                        tilt,
                    ),
                )
    bx = 0.40 * w
    y_top_mid = y0 + dy_top + back_t / 2
    spec.kp("back_top_left", (bx, y_top_mid, top_z))
    spec.kp("back_top_right", (-bx, y_top_mid, top_z))

    # Base.
    leg_kps: Dict[str, Optional[np.ndarray]] = {
        name: None
        for name in ("leg_front_left_foot", "leg_front_right_foot", "leg_back_left_foot", "leg_back_right_foot")
    }
    if base == "four_legs":
        round_legs = bool(rng.random() < 0.4)
        lt = rng.uniform(0.025, 0.055)  # leg thickness
        splay = rng.uniform(0.0, 0.05)
        inset = lt / 2 + rng.uniform(0.0, 0.03)
        foot_z = 0.03
        for name, sx, sy in (
            ("leg_front_left_foot", 1, -1),
            ("leg_front_right_foot", -1, -1),
            ("leg_back_left_foot", 1, 1),
            ("leg_back_right_foot", -1, 1),
        ):
            top = np.array([sx * (w / 2 - inset), sy * (d / 2 - inset), z_bottom + 0.5 * t])
            bot = np.array([sx * (w / 2 - inset + splay), sy * (d / 2 - inset + splay), 0.0])
            if round_legs:
                spec.add("leg", cylinder(bot, top, lt / 2, sections=16))
                f = foot_z / top[2]
                axis_pt = bot + f * (top - bot)
                outward = np.array([sx, sy, 0.0]) / np.sqrt(2)
                # On the round leg's surface, facing diagonally outward.
                leg_kps[name] = axis_pt + outward * (lt / 2) * np.cos(np.pi / 16)
            else:
                ht = lt / 2
                corners = np.array(
                    [
                        [bot[0] - ht, bot[1] - ht, 0.0],
                        [bot[0] + ht, bot[1] - ht, 0.0],
                        [bot[0] + ht, bot[1] + ht, 0.0],
                        [bot[0] - ht, bot[1] + ht, 0.0],
                        [top[0] - ht, top[1] - ht, top[2]],
                        [top[0] + ht, top[1] - ht, top[2]],
                        [top[0] + ht, top[1] + ht, top[2]],
                        [top[0] - ht, top[1] + ht, top[2]],
                    ]
                )
                spec.add("leg", hexahedron(corners))
                f = foot_z / top[2]
                c = bot + f * (top - bot)
                # On the front/back face of the leg (the face normal to y), near its middle.
                leg_kps[name] = np.array([c[0], c[1] + sy * ht, foot_z])
        if rng.random() < 0.4:  # stretchers between front and back legs, at mid height
            zs = rng.uniform(0.08, 0.2)
            for sx in (-1, 1):
                x = sx * (w / 2 - inset + splay * (1 - zs / (z_bottom + 0.5 * t)))
                spec.add("leg", box((x, 0, zs), (lt * 0.6, d - 2 * inset, lt * 0.6)))
            spec.style["stretchers"] = True
        spec.style.update(round_legs=round_legs, splay=float(splay))
    elif base == "swivel":
        col_r = rng.uniform(0.025, 0.045)
        hub_z = rng.uniform(0.05, 0.09)
        spec.add("leg", cylinder((0, 0, hub_z - 0.01), (0, 0, z_bottom + 0.01), col_r))
        spec.add("leg", cylinder((0, 0, z_bottom - 0.03), (0, 0, z_bottom + 0.005), col_r * 2.2))
        reach = rng.uniform(0.24, 0.32)
        phase = rng.uniform(0, 2 * np.pi / 5)
        for k in range(5):
            a = phase + 2 * np.pi * k / 5
            tip = np.array([reach * np.cos(a), reach * np.sin(a), hub_z])
            spec.add("leg", cylinder((0, 0, hub_z), tip, 0.018, sections=10))
            spec.add("leg", sphere(tip - np.array([0, 0, hub_z - 0.03]), 0.03, subdivisions=1))
    else:  # plinth
        pw, pd = w * rng.uniform(0.6, 0.95), d * rng.uniform(0.6, 0.95)
        spec.add("leg", box((0, 0, (z_bottom + 0.01) / 2), (pw, pd, z_bottom + 0.01)))
    for name, value in leg_kps.items():
        spec.kp(name, value)

    # Arms: a rest from near the back to the seat front on posts standing on the seat.
    if has_arms:
        arm_h = rng.uniform(0.15, 0.26)
        arm_w = rng.uniform(0.04, 0.07)
        arm_t = rng.uniform(0.025, 0.05)
        solid = bool(rng.random() < 0.3)
        y_front = -d / 2 + rng.uniform(0.0, 0.06)
        y_back = d / 2 - back_t
        for name, sx in (("arm_front_left", 1), ("arm_front_right", -1)):
            xc = sx * (w / 2 - arm_w / 2 + 0.005)
            z_rest = h + arm_h
            spec.add(
                "arm", box((xc, (y_front + y_back) / 2, z_rest - arm_t / 2), (arm_w + 0.006, y_back - y_front, arm_t))
            )
            if solid:  # a closed side panel under the rest
                spec.add(
                    "arm",
                    box(
                        (xc, (y_front + y_back) / 2 + 0.01, h + arm_h / 2 - 0.01),
                        (arm_w * 0.8, y_back - y_front - 0.04, arm_h - 0.01),
                    ),
                )
            else:
                spec.add("arm", box((xc, y_front + 0.03, h + arm_h / 2 - 0.01), (arm_w * 0.6, 0.03, arm_h)))
            spec.kp(name, (xc, y_front + 0.1 * (y_back - y_front), z_rest))
        spec.style["solid_arms"] = solid
    else:
        spec.kp("arm_front_left", None)
        spec.kp("arm_front_right", None)
    return spec
