"""Motorbike generator.

Parts (level-1, as ShapeNet-part): ``body`` (frame, engine, fork, swingarm, fenders, fairing, tail,
exhaust), ``wheel`` (tyres, rims, spokes, hubs), ``seat``, ``handle`` (handlebar, risers, grips,
scooter handlebar cover), ``gas_tank``, ``light`` (headlight and tail light).

Keypoints (10): ``front_wheel_center``, ``rear_wheel_center`` (centre of the left (+x) hub face),
``handle_left_end``, ``handle_right_end`` (outer end face of each grip), ``seat_front``, ``seat_rear``
(seat top near its front / rear end), ``headlight`` (centre of the headlight's front face), ``tank_top``
(top of the tank; absent for scooters), ``front_wheel_bottom``, ``rear_wheel_bottom`` (lowest point of
each tyre). Left is +x (the rider faces -y).

Style variation: sport (fairing with windscreen, clip-on bars, high tail with pillion seat), naked
(round headlight, flat bars, short tail), cruiser (long wheelbase, raked fork, low scooped seat, wide
pulled-back or ape-hanger bars, V-twin, deep fenders, twin pipes), dirt bike (tall and narrow, big
thin spoked wheels, high beak fender, long flat seat, number-plate light, high exhaust) and scooter
(step-through body with leg shield and floorboard, small wheels, bars in a cover, no tank); within a
style: wheelbase, wheel and tyre sizes, cast or spoked rims, fork rake, seat height and length,
handlebar width/rise/sweep, tank size, engine size.
"""

from __future__ import annotations

import numpy as np

from featurenerf_ns.data.procedural.geometry import ShapeSpec, box, cylinder, hexahedron, loft, torus

PARTS = ["body", "wheel", "seat", "handle", "gas_tank", "light"]
KEYPOINTS = [
    ("front_wheel_center", "wheel"),
    ("rear_wheel_center", "wheel"),
    ("handle_left_end", "handle"),
    ("handle_right_end", "handle"),
    ("seat_front", "seat"),
    ("seat_rear", "seat"),
    ("headlight", "light"),
    ("tank_top", "gas_tank"),
    ("front_wheel_bottom", "wheel"),
    ("rear_wheel_bottom", "wheel"),
]

STYLES = ("sport", "naked", "cruiser", "dirt", "scooter")

# Per style, uniform ranges (metres, degrees): wheelbase, front/rear wheel radius, front/rear tyre
# section radius, fork rake, steering-head top height, seat height, handlebar half-width, rise and
# rearward sweep.
_RANGES = {
    "sport": dict(
        wb=(1.36, 1.48),
        rf=(0.29, 0.31),
        rr=(0.3, 0.32),
        tf=(0.055, 0.06),
        tr=(0.075, 0.09),
        rake=(21, 26),
        head=(0.8, 0.92),
        seat=(0.78, 0.88),
        bar_w=(0.3, 0.34),
        rise=(-0.06, -0.02),
        back=(0.06, 0.1),
    ),
    "naked": dict(
        wb=(1.4, 1.48),
        rf=(0.3, 0.32),
        rr=(0.3, 0.32),
        tf=(0.05, 0.058),
        tr=(0.065, 0.08),
        rake=(24, 27),
        head=(0.93, 1.0),
        seat=(0.78, 0.84),
        bar_w=(0.36, 0.4),
        rise=(0.08, 0.14),
        back=(0.04, 0.1),
    ),
    "cruiser": dict(
        wb=(1.6, 1.75),
        rf=(0.33, 0.36),
        rr=(0.31, 0.33),
        tf=(0.055, 0.065),
        tr=(0.085, 0.1),
        rake=(30, 38),
        head=(0.9, 1.0),
        seat=(0.62, 0.7),
        bar_w=(0.42, 0.48),
        rise=(0.1, 0.35),
        back=(0.16, 0.28),
    ),
    "dirt": dict(
        wb=(1.45, 1.5),
        rf=(0.36, 0.39),
        rr=(0.33, 0.36),
        tf=(0.042, 0.05),
        tr=(0.055, 0.065),
        rake=(26, 28),
        head=(1.04, 1.12),
        seat=(0.9, 0.97),
        bar_w=(0.38, 0.42),
        rise=(0.1, 0.14),
        back=(0.02, 0.06),
    ),
    "scooter": dict(
        wb=(1.25, 1.38),
        rf=(0.2, 0.24),
        rr=(0.2, 0.24),
        tf=(0.05, 0.06),
        tr=(0.05, 0.06),
        rake=(25, 29),
        head=(0.92, 1.0),
        seat=(0.74, 0.8),
        bar_w=(0.32, 0.36),
        rise=(0.04, 0.08),
        back=(0.0, 0.03),
    ),
}

# Body proportions of the non-scooter styles: tank length/height/width, swingarm length, pivot height
# above the rear axle, engine bottom height and width, rider seat length.
_BODY = {
    "sport": dict(
        tank_len=(0.42, 0.5),
        tank_h=(0.2, 0.25),
        tank_w=(0.36, 0.42),
        arm=(0.5, 0.58),
        piv=(0.04, 0.1),
        eng_z=(0.22, 0.28),
        eng_w=(0.3, 0.36),
        seat_len=(0.3, 0.38),
    ),
    "naked": dict(
        tank_len=(0.4, 0.48),
        tank_h=(0.18, 0.24),
        tank_w=(0.32, 0.4),
        arm=(0.5, 0.58),
        piv=(0.04, 0.1),
        eng_z=(0.22, 0.28),
        eng_w=(0.3, 0.36),
        seat_len=(0.55, 0.65),
    ),
    "cruiser": dict(
        tank_len=(0.45, 0.55),
        tank_h=(0.17, 0.22),
        tank_w=(0.3, 0.36),
        arm=(0.55, 0.62),
        piv=(0.04, 0.1),
        eng_z=(0.14, 0.18),
        eng_w=(0.26, 0.3),
        seat_len=(0.3, 0.36),
    ),
    "dirt": dict(
        tank_len=(0.3, 0.36),
        tank_h=(0.14, 0.18),
        tank_w=(0.26, 0.3),
        arm=(0.56, 0.62),
        piv=(0.12, 0.18),
        eng_z=(0.3, 0.36),
        eng_w=(0.2, 0.24),
        seat_len=(0.6, 0.7),
    ),
}

X = np.array([1.0, 0.0, 0.0])


def _tube(points, radius, sections=12):
    return loft(points, [radius] * len(points), sections=sections)


def _arc(centre, radius, a0, a1, n=7):
    """Points on a circle in the y-z plane: angle 0 is straight up, positive angles go forward (-y)."""
    a = np.deg2rad(np.linspace(a0, a1, n))
    c = np.asarray(centre, dtype=np.float64)
    return np.stack([np.full(n, c[0]), c[1] - radius * np.sin(a), c[2] + radius * np.cos(a)], axis=1)


def _pad(y0, y1, z0, z1, w0, w1, thickness):
    """Seat cushion from y0 to y1 whose planar top rises from z0 to z1 (widths w0 front, w1 rear).
    Returns the mesh and a function giving the top-centre-line point at fraction t from the front."""
    inset = 0.2 * thickness
    ya, yb = y0 + inset, y1 - inset
    c = np.array(
        [
            [-w0 / 2, y0, z0 - thickness],
            [w0 / 2, y0, z0 - thickness],
            [w1 / 2, y1, z1 - thickness],
            [-w1 / 2, y1, z1 - thickness],
            [-0.4 * w0, ya, z0],
            [0.4 * w0, ya, z0],
            [0.4 * w1, yb, z1],
            [-0.4 * w1, yb, z1],
        ]
    )
    return hexahedron(c), lambda t: np.array([0.0, ya + t * (yb - ya), z0 + t * (z1 - z0)])


def _wheel(spec, centre, radius, tyre_r, hub_hw, spoked, rng):
    """Tyre (torus), rim (disc or spokes + rim ring) and hub; returns the hub face centre (+x side) and
    the tyre's lowest point (centre of its lowest triangle)."""
    c = np.asarray(centre, dtype=np.float64)
    tyre = torus(c, X, radius - tyre_r, tyre_r, sections=32, tube_sections=12)
    spec.add("wheel", tyre)
    if spoked:
        rim_r = radius - 1.8 * tyre_r
        spec.add("wheel", torus(c, X, rim_r, 0.3 * tyre_r, sections=32, tube_sections=8))
        n = int(rng.choice([12, 16]))
        for k in range(n):
            a = 2 * np.pi * (k + 0.5 * (k % 2)) / n
            d = np.array([0.0, np.cos(a), np.sin(a)])
            s = 1 if k % 2 else -1
            spec.add("wheel", cylinder(c + d * 0.08 * radius + X * s * 0.6 * hub_hw, c + d * rim_r, 0.006, sections=5))
        hub_r = 0.13 * radius
    else:
        spec.add("wheel", cylinder(c - X * 0.4 * tyre_r, c + X * 0.4 * tyre_r, radius - 1.3 * tyre_r, sections=32))
        hub_r = 0.18 * radius
    spec.add("wheel", cylinder(c - X * hub_hw, c + X * hub_hw, hub_r, sections=16))
    centroids = tyre.triangles.mean(axis=1)
    return c + X * hub_hw, centroids[np.argmin(centroids[:, 2])]


def build(rng: np.random.Generator) -> ShapeSpec:
    spec = ShapeSpec()
    style = str(rng.choice(STYLES))
    p = {k: float(rng.uniform(*v)) for k, v in _RANGES[style].items()}
    wb, rf, rr = p["wb"], p["rf"], p["rr"]
    spoked = style == "dirt" or (style in ("naked", "cruiser") and bool(rng.random() < 0.5))

    # Wheels (front axle at -y).
    yf, yr = -wb / 2, wb / 2
    hub_hw_front, hub_hw_rear = max(1.15 * p["tf"], 0.06), max(1.15 * p["tr"], 0.07)  # hub half-widths
    front_hub, front_bottom = _wheel(spec, (0, yf, rf), rf, p["tf"], hub_hw_front, spoked, rng)
    rear_hub, rear_bottom = _wheel(spec, (0, yr, rr), rr, p["tr"], hub_hw_rear, spoked, rng)
    spec.kp("front_wheel_center", front_hub)
    spec.kp("rear_wheel_center", rear_hub)
    spec.kp("front_wheel_bottom", front_bottom)
    spec.kp("rear_wheel_bottom", rear_bottom)

    # Fork: two legs from the front axle up the (raked) steering axis to the top clamp.
    rake = np.deg2rad(p["rake"])
    f = np.array([0.0, np.sin(rake), np.cos(rake)])  # up the steering axis (leans back)
    n_fwd = np.array([0.0, -np.cos(rake), np.sin(rake)])  # perpendicular to it, pointing forward
    axle = np.array([0.0, yf, rf])
    head_top = axle + f * (p["head"] - rf) / np.cos(rake)
    head_bot = head_top - 0.2 * f
    leg_r = {"dirt": 0.03, "cruiser": 0.022}.get(style, 0.026)
    fx = hub_hw_front + 0.012 + leg_r  # fork legs clear of the hub faces
    for s in (1, -1):
        spec.add("body", cylinder(axle + s * fx * X - 0.03 * f, head_top + s * fx * X, leg_r, sections=12))
    for q in (head_top, head_bot):
        spec.add("body", cylinder(q - (fx + leg_r + 0.01) * X, q + (fx + leg_r + 0.01) * X, 0.03, sections=12))
    spec.add("body", cylinder(head_bot - 0.03 * f, head_top + 0.04 * f, 0.034, sections=12))

    # Handlebar: a bent tube through the bar clamp with a grip at each end.
    bar_w, rise, back = p["bar_w"], p["rise"], p["back"]
    bar_c = head_top + 0.05 * f + np.array([0.0, 0.0, max(rise, 0.0) * 0.3])
    ends = {}
    if style == "sport":  # clip-ons: two short separate bars clamped to the fork tops
        for side, s in (("left", 1), ("right", -1)):
            inner = head_top + s * fx * X + 0.02 * f
            outer = inner + np.array([s * (bar_w - fx - 0.11), back, rise])
            spec.add("handle", _tube([inner, outer], 0.014))
            ends[side] = (outer, outer + np.array([s * 0.12, 0.02, 0.0]))
    else:
        xs = np.array([0.45, 0.7, 1.0]) * (bar_w - 0.12)
        pts = [np.array([x, back * (x / bar_w) ** 2, rise * (x / bar_w) ** 1.5]) for x in xs]
        path = [bar_c + q * np.array([-1, 1, 1]) for q in pts[::-1]] + [bar_c + q for q in pts]
        spec.add("handle", _tube(path, 0.014))
        spec.add("handle", cylinder(head_top, bar_c + np.array([0, 0, 0.02]), 0.022, sections=10))  # riser
        for side, s in (("left", 1), ("right", -1)):
            q = path[-1] if s == 1 else path[0]
            ends[side] = (q, q + np.array([s * 0.12, 0.0, 0.0]))
    for side, (a, b) in ends.items():
        spec.add("handle", cylinder(a - 0.01 * (b - a) / np.linalg.norm(b - a), b, 0.02, sections=12))
        spec.kp(f"handle_{side}_end", b)

    if style == "scooter":
        _scooter(spec, rng, p, axle, head_top, bar_c, hub_hw_rear, f)
    else:
        _bike(spec, rng, style, p, head_top, head_bot, f, n_fwd, fx, hub_hw_rear)
    spec.style.update(
        style=style,
        wheelbase=wb,
        front_wheel_radius=rf,
        rear_wheel_radius=rr,
        front_tyre=p["tf"],
        rear_tyre=p["tr"],
        rake_deg=p["rake"],
        seat_height=p["seat"],
        bar_half_width=bar_w,
        bar_rise=rise,
        bar_sweep=back,
        spoked=spoked,
    )
    return spec


def _bike(spec, rng, style, p, head_top, head_bot, f, n_fwd, fx, hub_hw_rear):
    """Frame, engine, tank, seat, tail, fenders, exhaust and lights of a (non-scooter) motorbike."""
    wb, rf, rr, z_seat = p["wb"], p["rf"], p["rr"], p["seat"]
    yf, yr = -wb / 2, wb / 2
    rake = np.deg2rad(p["rake"])
    u = rng.uniform

    # Tank from just behind the steering head to the seat front.
    q = {k: float(u(*v)) for k, v in _BODY[style].items()}
    tank_len, tank_h, tank_w = q["tank_len"], q["tank_h"], q["tank_w"]
    y_t0 = head_top[1] + 0.04  # clear of the steering head
    y_s0 = y_t0 + tank_len + 0.02  # seat front, just behind the tank
    seat_th = u(0.07, 0.1)
    z_tank_top = max(head_top[2] - 0.02, z_seat + 0.1) if style != "dirt" else z_seat + 0.06
    z_tc = z_tank_top - tank_h / 2
    ts = np.array([0.0, 0.12, 0.4, 0.7, 0.92, 1.0])
    drop = np.array([0.0, 0.0, 0.01, 0.04, 0.08, 0.1]) * (2.0 if style == "cruiser" else 1.0)
    tank = loft(
        [(0, y_t0 + t * tank_len, z_tc - d) for t, d in zip(ts, drop)],
        [
            (tank_w / 2 * a, tank_h / 2 * b)
            for a, b in zip([0.55, 0.9, 1.0, 0.95, 0.75, 0.35], [0.6, 0.9, 1.0, 0.92, 0.75, 0.4])
        ],
        sections=20,
    )
    spec.add("gas_tank", tank)
    centroids = tank.triangles.mean(axis=1)  # top: highest triangle in the middle of the tank
    mid = np.abs(centroids[:, 1] - (y_t0 + 0.45 * tank_len)) < 0.15 * tank_len
    spec.kp("tank_top", centroids[mid][np.argmax(centroids[mid, 2])])

    # Frame: backbone under the tank to the swingarm pivot, down tube to the engine.
    y_piv = yr - q["arm"]
    z_piv = rr + q["piv"]
    z_e0 = q["eng_z"]
    z_e1 = z_tc - tank_h * 0.35
    y_e0 = head_bot[1] + u(0.1, 0.16)
    ew = q["eng_w"]
    z_spine = min(z_tc - tank_h * 0.25, z_seat - seat_th - 0.04)
    spine = [head_bot - 0.02 * f, np.array([0, y_s0, z_spine]), np.array([0, y_piv, z_piv + 0.12])]
    spec.add("body", _tube(spine, 0.035))
    spec.add("body", _tube([head_bot, np.array([0, y_e0 + 0.03, z_e0 + 0.1])], 0.03))
    # Engine: crankcase box plus cylinders.
    spec.add("body", box((0, (y_e0 + y_piv + 0.02) / 2, z_e0 + 0.12), (ew, y_piv + 0.02 - y_e0, 0.24)))
    crank = np.array([0.0, 0.5 * (y_e0 + y_piv), z_e0 + 0.14])
    if style == "cruiser":
        for a in (-32, 32):  # V-twin
            d = np.array([0.0, -np.sin(np.deg2rad(a)), np.cos(np.deg2rad(a))])
            length = min(0.34, (z_e1 - crank[2]) / d[2])
            spec.add("body", cylinder(crank, crank + d * length * 0.8, 0.07, sections=16))
            spec.add("body", cylinder(crank + d * length * 0.7, crank + d * length, 0.085, sections=16))
    else:  # inline block (street) or single cylinder (dirt) leaning forward
        lean = np.array([0.0, -np.sin(np.deg2rad(25)), np.cos(np.deg2rad(25))])
        length = (z_e1 - crank[2]) / lean[2]
        width = ew * 0.85 if style != "dirt" else 0.12
        base = crank + np.array([0, 0, 0.08])
        top = crank + lean * length
        c = [
            np.array([sx * width / 2, q[1] + sy * 0.09, q[2]])
            for q in (base, top)
            for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))
        ]
        spec.add("body", hexahedron(np.array(c)))

    # Swingarm (clear of the hub faces) and rear suspension.
    ax = hub_hw_rear + 0.015 + 0.025
    for s in (1, -1):
        spec.add("body", cylinder((s * ax, y_piv, z_piv), (s * ax, yr + 0.04, rr), 0.025, sections=10))
        if style in ("naked", "cruiser"):  # twin shocks
            spec.add(
                "body", cylinder((s * ax, yr - 0.08, rr + 0.02), (s * ax, yr - 0.2, z_seat - 0.1), 0.022, sections=10)
            )
    spec.add("body", cylinder((-ax - 0.03, y_piv, z_piv), (ax + 0.03, y_piv, z_piv), 0.03, sections=10))

    # Seat (+ pillion) and tail.
    if style == "sport":
        y_s1 = y_s0 + q["seat_len"]
        y_tail = yr + u(0.05, 0.15)
        z_tail = z_seat + u(0.08, 0.24)
        rider, rider_at = _pad(y_s0, y_s1, z_seat, z_seat + 0.03, 0.3, 0.24, seat_th)
        pillion, rear_at = _pad(y_s1 - 0.02, y_s1 + u(0.18, 0.24), z_seat + 0.07, z_tail - 0.01, 0.2, 0.16, 0.1)
        spec.add("seat", rider)
        spec.add("seat", pillion)
        spec.add(
            "body",
            loft(
                [(0, y_s0 + 0.05, z_seat - 0.12), (0, y_s1, z_seat - 0.03), (0, y_tail, z_tail - 0.04)],
                [(0.14, 0.09), (0.12, 0.08), (0.05, 0.035)],
                sections=16,
            ),
        )
        spec.add(
            "light", cylinder((0, y_tail - 0.03, z_tail - 0.04), (0, y_tail + 0.015, z_tail - 0.04), 0.03, sections=12)
        )
    else:
        y_s1 = y_s0 + q["seat_len"]
        if style == "cruiser":
            rider, rider_at = _pad(y_s0, y_s1, z_seat + 0.02, z_seat, 0.28, 0.36, seat_th)
            pillion, rear_at = _pad(
                y_s1 - 0.03, y_s1 + u(0.18, 0.26), z_seat + u(0.06, 0.1), z_seat + u(0.06, 0.12), 0.22, 0.2, 0.12
            )
            spec.add("seat", rider)
            spec.add("seat", pillion)
            y_s1 = y_s1 + 0.2
        else:
            z_front = z_seat + (0.05 if style == "dirt" else 0.0)
            rider, rider_at = _pad(
                y_s0,
                y_s1,
                z_front,
                z_seat + 0.02,
                0.24 if style == "dirt" else 0.3,
                0.2 if style == "dirt" else 0.28,
                seat_th,
            )
            rear_at = rider_at
            spec.add("seat", rider)
        # Side covers / subframe under the seat.
        z_cb = min(z_e1 - 0.08, z_seat - seat_th - 0.12)
        z0, z1 = rider_at(0.0)[2] - seat_th + 0.03, z_seat - seat_th + 0.03  # just into the seat's underside
        spec.add(
            "body",
            hexahedron(
                np.array(
                    [
                        [-0.11, y_s0 - 0.02, z_cb],
                        [0.11, y_s0 - 0.02, z_cb],
                        [0.09, y_s1 - 0.08, z_seat - seat_th - 0.02],
                        [-0.09, y_s1 - 0.08, z_seat - seat_th - 0.02],
                        [-0.11, y_s0 - 0.02, z0],
                        [0.11, y_s0 - 0.02, z0],
                        [0.09, y_s1 - 0.08, z1],
                        [-0.09, y_s1 - 0.08, z1],
                    ]
                )
            ),
        )
        # Rear fender: hugging arc (naked, cruiser) or a high straight plate (dirt) with a tail light.
        if style == "dirt":
            y_end = yr + u(0.15, 0.25)
            z_end = z_seat + u(0.0, 0.06)
            spec.add(
                "body",
                hexahedron(
                    np.array(
                        [
                            [-0.09, y_s1 - 0.2, z_seat - seat_th - 0.03],
                            [0.09, y_s1 - 0.2, z_seat - seat_th - 0.03],
                            [0.06, y_end, z_end - 0.03],
                            [-0.06, y_end, z_end - 0.03],
                            [-0.09, y_s1 - 0.2, z_seat - seat_th + 0.01],
                            [0.09, y_s1 - 0.2, z_seat - seat_th + 0.01],
                            [0.06, y_end, z_end],
                            [-0.06, y_end, z_end],
                        ]
                    )
                ),
            )
        else:
            hug = 1.25 if style == "cruiser" else 1.15
            a1 = -u(100, 125) if style == "cruiser" else -u(60, 80)
            arc = _arc((0, yr, rr), rr + 0.04, 20, a1, 8)
            spec.add("body", loft(arc, [(p["tr"] * hug, 0.012)] * len(arc), sections=16))
            spec.add(
                "light",
                cylinder(arc[-1] + np.array([0, -0.02, 0.03]), arc[-1] + np.array([0, 0.03, 0.04]), 0.03, sections=12),
            )
    spec.kp("seat_front", rider_at(0.15))
    spec.kp("seat_rear", rear_at(0.88))

    # Front fender and headlight (inside a fairing for sport bikes, on a number plate for dirt bikes).
    axle = np.array([0.0, yf, rf])
    if style == "dirt":
        arc = _arc(axle, rf + u(0.1, 0.14), -35, 60, 6)
    else:
        arc = _arc(axle, rf + 0.035, -45, 55, 7)
    spec.add("body", loft(arc, [(p["tf"] * 1.25, 0.012)] * len(arc), sections=16))
    if style == "sport":
        # Upper fairing: a shell pointing forward around the steering head, headlight in its nose,
        # windscreen on top; lower fairing panels hide the engine.
        zf = head_top[2] - u(0.1, 0.14)
        nose = np.array([0.0, head_top[1] - u(0.28, 0.4), zf])
        fair = [
            nose,
            nose + np.array([0, 0.14, 0.0]),
            np.array([0, head_top[1] + 0.02, zf - 0.04]),
            np.array([0, head_top[1] + 0.1, zf - 0.1]),
        ]
        spec.add("body", loft(fair, [(0.08, 0.06), (0.19, 0.15), (0.22, 0.19), (0.12, 0.1)], sections=20))
        spec.add("light", cylinder(nose + np.array([0, 0.06, 0]), nose - np.array([0, 0.02, 0]), 0.05, sections=16))
        spec.kp("headlight", nose - np.array([0, 0.02, 0]))
        sb, rise = nose + np.array([0, 0.08, 0.08]), u(0.12, 0.2)
        spec.add(
            "body",
            hexahedron(
                np.array(
                    [
                        [-0.12, sb[1], sb[2] - 0.03],
                        [0.12, sb[1], sb[2] - 0.03],
                        [0.12, sb[1] + 0.01, sb[2] - 0.03],
                        [-0.12, sb[1] + 0.01, sb[2] - 0.03],
                        [-0.08, sb[1] + 0.2, sb[2] + rise],
                        [0.08, sb[1] + 0.2, sb[2] + rise],
                        [0.08, sb[1] + 0.21, sb[2] + rise],
                        [-0.08, sb[1] + 0.21, sb[2] + rise],
                    ]
                )
            ),
        )
        side = [
            (head_top[1] - 0.08, zf - 0.06),
            (head_bot[1] + 0.04, z_e0 + 0.04),
            (y_piv - 0.12, z_e0),
            (y_piv - 0.2, z_e1 - 0.02),
        ]
        hw = ew / 2 + 0.04
        spec.add("body", hexahedron(np.array([(-hw, y, z) for y, z in side] + [(hw, y, z) for y, z in side])))
    elif style == "dirt":
        centre = head_bot + 0.04 * f + n_fwd * 0.07
        up, side = f * 0.12, X * 0.11
        plate = [centre - side - up, centre + side - up, centre + side + up, centre - side + up]
        spec.add("body", hexahedron(np.array([q - 0.012 * n_fwd for q in plate] + [q + 0.012 * n_fwd for q in plate])))
        front = centre + 0.04 * n_fwd
        spec.add("light", cylinder(centre, front, 0.045, sections=12))
        spec.kp("headlight", front)
    else:  # round headlight held between the fork legs by a bracket
        r_l = u(0.08, 0.1) if style == "cruiser" else u(0.07, 0.085)
        z_l = head_top[2] - 0.1
        y_leg = yf + (z_l - rf) * np.tan(rake)
        back = np.array([0.0, y_leg, z_l])
        front = back - np.array([0.0, 0.05 + r_l, 0.0])
        spec.add("light", cylinder(back, front, r_l, sections=20))
        spec.add("body", cylinder(back - (fx + 0.01) * X, back + (fx + 0.01) * X, 0.018, sections=8))
        spec.kp("headlight", front)

    # Exhaust on the right (-x).
    xe = -(ew / 2 + 0.05)
    start = np.array([0, y_e0 + 0.04, z_e0 + 0.18])
    if style == "cruiser":
        for dz in (0.0, 0.07):
            pipe = [
                start + np.array([0, 0, dz]),
                np.array([xe, y_e0 + 0.1, z_e0 + 0.05 + dz]),
                np.array([xe - 0.03, yr + 0.05, z_e0 + 0.1 + dz]),
            ]
            spec.add("body", _tube(pipe, 0.03))
    else:
        z_m, y_m = (
            (z_seat - 0.05, yr - 0.05)
            if style == "dirt"
            else (z_e0 + 0.2, yr - 0.15)
            if style == "naked"
            else (z_seat - 0.2, yr - 0.1)
        )
        pipe = [
            start,
            np.array([xe, y_e0 + 0.02, z_e0 + 0.02]),
            np.array([xe, y_piv - 0.05, z_e0 + 0.01]),
            np.array([xe - 0.03, y_m - 0.25, z_m - 0.05]),
        ]
        spec.add("body", _tube(pipe, 0.025))
        spec.add(
            "body",
            cylinder((xe - 0.04, y_m - 0.3, z_m - 0.06), (xe - 0.04, y_m + 0.08, z_m + 0.02), 0.055, sections=16),
        )


def _scooter(spec, rng, p, axle, head_top, bar_c, hub_hw_rear, f):
    """Step-through scooter body: leg shield, floorboard, rear body with engine unit, bench seat,
    handlebar cover with headlight; no separate gas tank."""
    u = rng.uniform
    wb, rr, z_seat = p["wb"], p["rr"], p["seat"]
    yr = wb / 2
    spec.kp("tank_top", None)
    # Leg shield behind the fork, following the rake.
    y_ls = axle[1] + p["rf"] + u(0.06, 0.1)
    shield_bot, shield_top = np.array([0, y_ls, 0.24]), head_top - f * 0.06
    shield_top[1] = max(shield_top[1], y_ls + 0.05) + 0.04
    wb0, wt = u(0.2, 0.24), u(0.2, 0.26)
    c = [shield_bot + np.array([sx * wb0, dy, 0]) for sx, dy in ((-1, 0), (1, 0))]
    c = [c[0], c[1], c[1] + np.array([0, 0.04, 0]), c[0] + np.array([0, 0.04, 0])]
    t = [shield_top + np.array([sx * wt, dy, 0]) for sx, dy in ((-1, 0.0), (1, 0.0), (1, 0.04), (-1, 0.04))]
    spec.add("body", hexahedron(np.array(c + t)))
    # Floorboard.
    y_rb0 = yr - u(0.55, 0.62)  # front of the rear body
    z_floor = u(0.26, 0.32)
    spec.add("body", box((0, (y_ls + y_rb0 + 0.1) / 2, z_floor - 0.06), (u(0.3, 0.36), y_rb0 + 0.1 - y_ls, 0.12)))
    # Rear body over the rear wheel and engine, the bench seat on it.
    w_rb = u(0.34, 0.4)
    z_top = z_seat - 0.07
    y_end = yr + u(0.2, 0.3)
    body = loft(
        [(0, y_rb0, z_top - 0.15), (0, y_rb0 + 0.2, z_top - 0.12), (0, yr, z_top - 0.13), (0, y_end, z_top - 0.1)],
        [(0.1, 0.1), (w_rb / 2, 0.17), (w_rb / 2 * 0.9, 0.16), (0.08, 0.07)],
        sections=20,
    )
    spec.add("body", body)
    spec.add("light", cylinder((0, y_end - 0.03, z_top - 0.1), (0, y_end + 0.02, z_top - 0.1), 0.04, sections=12))
    seat, at = _pad(y_rb0 + 0.08, yr + u(0.05, 0.12), z_seat, z_seat + u(0.0, 0.04), 0.28, 0.26, 0.1)
    spec.add("seat", seat)
    spec.kp("seat_front", at(0.12))
    spec.kp("seat_rear", at(0.88))
    # Engine / swingarm unit on the right side; front fender; steering column into the bar cover.
    xa = -(hub_hw_rear + 0.015)
    spec.add(
        "body",
        hexahedron(
            np.array(
                [
                    [xa - 0.1, y_rb0 + 0.05, 0.14],
                    [xa, y_rb0 + 0.05, 0.14],
                    [xa, yr + 0.05, rr - 0.06],
                    [xa - 0.1, yr + 0.05, rr - 0.06],
                    [xa - 0.1, y_rb0 + 0.05, z_top - 0.2],
                    [xa, y_rb0 + 0.05, z_top - 0.2],
                    [xa, yr + 0.05, rr + 0.06],
                    [xa - 0.1, yr + 0.05, rr + 0.06],
                ]
            )
        ),
    )
    arc = _arc(axle, p["rf"] + 0.04, -40, 70, 7)
    spec.add("body", loft(arc, [(p["tf"] * 1.4, 0.014)] * len(arc), sections=16))
    cover_c = bar_c + np.array([0, 0.0, 0.01])
    spec.add("handle", box(cover_c, (u(0.28, 0.36), 0.16, 0.09)))
    front = cover_c + np.array([0, -0.1, 0.0])
    spec.add("light", cylinder(front + np.array([0, 0.05, 0]), front, 0.04, sections=16))
    spec.kp("headlight", front)
