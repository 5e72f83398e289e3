"""Airplane generator.

Parts (level-1, as ShapeNet-part): ``body`` (fuselage, fighter canopy), ``wing`` (main wing halves),
``tail`` (horizontal stabilisers and vertical fin), ``engine`` (nacelles and their pylons).

Keypoints (10): ``nose`` (front tip of the fuselage), ``tail_end`` (rear tip of the fuselage),
``wing_tip_left``, ``wing_tip_right`` (wing tip faces), ``stabilizer_tip_left``, ``stabilizer_tip_right``
(stabiliser tip faces), ``fin_top`` (top face of the fin), ``wing_root_front_left`` (upper wing surface
just behind the leading edge where the left wing leaves the fuselage), ``engine_front_left``,
``engine_front_right`` (centre of the intake face of the left/right engine: the inboard pair for four
engines; absent without engines). Left is +x (the pilot faces -y).

Style variation: wing planform (straight, swept, delta) with sweep, span, root chord, taper,
thickness and dihedral; low, mid or high wing; engines (none, two or four under the wings, two on
the rear fuselage) and nacelle size; conventional or T-tail with fin height/sweep/taper and
stabiliser span; fuselage length-to-diameter ratio, nose length/bluntness/droop, tail-cone length
and upsweep; a canopy on slender fighter-like fuselages.
"""

from __future__ import annotations

import numpy as np

from featurenerf_ns.data.procedural.geometry import ShapeSpec, box, hexahedron, loft, revolve

PARTS = ["body", "wing", "tail", "engine"]
KEYPOINTS = [
    ("nose", "body"),
    ("tail_end", "body"),
    ("wing_tip_left", "wing"),
    ("wing_tip_right", "wing"),
    ("stabilizer_tip_left", "tail"),
    ("stabilizer_tip_right", "tail"),
    ("fin_top", "tail"),
    ("wing_root_front_left", "wing"),
    ("engine_front_left", "engine"),
    ("engine_front_right", "engine"),
]

WINGS = ("straight", "swept", "delta")
# Engine layouts per wing planform with their probabilities.
_ENGINES = {
    "straight": (("none", "wing2", "wing4"), (0.35, 0.45, 0.2)),
    "swept": (("none", "wing2", "wing4", "rear2"), (0.1, 0.45, 0.2, 0.25)),
    "delta": (("none", "wing2"), (0.6, 0.4)),
}


class _Surface:
    """Tapered, swept lifting surface with a double-wedge (diamond) section: root at ``root`` (its
    leading edge), extending by ``span`` along unit vector ``direction``. ``section`` gives the section
    plane's chordwise (+y) and thickness axes. The ratio thickness/chord is constant, so all four side
    faces are planar trapezoids and points interpolated on them lie exactly on the mesh."""

    def __init__(self, root, direction, span, chord_root, chord_tip, sweep, thickness_axis, tc):
        self.root = np.asarray(root, dtype=np.float64)
        self.dir = np.asarray(direction, dtype=np.float64)
        self.span, self.cr, self.ct = span, chord_root, chord_tip
        self.tan_sweep, self.t_axis, self.tc = np.tan(sweep), np.asarray(thickness_axis, dtype=np.float64), tc

    def section(self, u: float) -> np.ndarray:
        """Leading edge, upper ridge, trailing edge, lower ridge at span fraction ``u``."""
        chord = self.cr + u * (self.ct - self.cr)
        le = self.root + u * self.span * self.dir + np.array([0.0, u * self.span * self.tan_sweep, 0.0])
        ridge = le + np.array([0.0, 0.4 * chord, 0.0])
        half_t = 0.5 * self.tc * chord * self.t_axis
        return np.array([le, ridge + half_t, le + np.array([0.0, chord, 0.0]), ridge - half_t])

    def mesh(self):
        return hexahedron(np.concatenate([self.section(0.0), self.section(1.0)]))

    def tip_point(self) -> np.ndarray:
        """On the flat tip face, on its chord line at 40 % chord."""
        le, _, te, _ = self.section(1.0)
        return le + 0.4 * (te - le)

    def front_upper_point(self, u: float, v: float) -> np.ndarray:
        """On the upper-front face, at span fraction ``u`` and fraction ``v`` from leading edge to ridge."""
        le, up, _, _ = self.section(u)
        return le + v * (up - le)


def build(rng: np.random.Generator) -> ShapeSpec:
    spec = ShapeSpec()
    wing = str(rng.choice(WINGS, p=(0.3, 0.5, 0.2)))
    names, probs = _ENGINES[wing]
    engines = str(rng.choice(names, p=probs))
    t_tail = engines == "rear2" or (wing != "delta" and bool(rng.random() < 0.3))

    # Fuselage (length 1 along y, nose at -y): nose taper, cylinder, upswept tail cone.
    L = 1.0
    y0 = -L / 2
    if wing == "delta":
        rf, nl, blunt = rng.uniform(0.035, 0.05), rng.uniform(0.18, 0.28), rng.uniform(0.75, 0.95)
    else:
        rf, nl, blunt = rng.uniform(0.045, 0.08), rng.uniform(0.07, 0.14), rng.uniform(0.4, 0.65)
    droop = rng.uniform(0.0, 0.3) * rf
    t_ts = rng.uniform(0.6, 0.72)  # tail-cone start (fraction of length)
    tail_r = rng.uniform(0.12, 0.3)
    up = rng.uniform(0.6, 0.95)  # how much the tail cone's bottom sweeps up (top line stays nearly flat)
    ts = np.concatenate(
        [nl * np.array([0.0, 0.04, 0.15, 0.35, 0.6, 1.0]), [t_ts], t_ts + (1 - t_ts) * np.array([0.3, 0.6, 0.85, 1.0])]
    )
    radii, zc = [], []
    for t in ts:
        if t <= nl:
            r = rf * max((t / nl) ** blunt, 0.03)
            z = -droop * (1 - t / nl) ** 2
        else:
            tau = max(t - t_ts, 0.0) / (1 - t_ts)
            r = rf * (1 - (1 - tail_r) * tau**1.3)
            z = (rf - r) * up
        radii.append(r)
        zc.append(z)
    ys = y0 + ts * L
    centres = np.stack([np.zeros_like(ys), ys, zc], axis=1)
    spec.add("body", loft(centres, radii, sections=24))
    spec.kp("nose", centres[0])
    spec.kp("tail_end", centres[-1])
    y_ts, y1 = ys[6], ys[-1]

    def centre_z(y):
        return float(np.interp(y, ys, zc))

    def radius(y):
        return float(np.interp(y, ys, radii))

    # Main wing planform (placed after the tail, which bounds how far back it may sit).
    if wing == "straight":
        sweep, taper = rng.uniform(0, 8), rng.uniform(0.45, 1.0)
        span, cr = rng.uniform(0.45, 0.65) * L, rng.uniform(0.1, 0.16) * L
    elif wing == "swept":
        sweep, taper = rng.uniform(22, 40), rng.uniform(0.2, 0.4)
        span, cr = rng.uniform(0.38, 0.55) * L, rng.uniform(0.15, 0.24) * L
    else:
        sweep, taper = rng.uniform(48, 62), rng.uniform(0.05, 0.15)
        cr = rng.uniform(0.35, 0.45) * L
        span = (1 - taper) * cr / np.tan(np.deg2rad(sweep)) * rng.uniform(0.85, 1.05)
    sweep = np.deg2rad(sweep)

    # Tail: fin first (a T-tail's stabiliser sits near its top).
    hf = rng.uniform(0.11, 0.2) * L
    cf = rng.uniform(0.13, 0.22) * L
    fin_taper = rng.uniform(0.6, 0.85) if t_tail else rng.uniform(0.3, 0.6)
    fin_sweep = np.deg2rad(rng.uniform(25, 50))
    y_fte = y1 - rng.uniform(0.005, 0.03) * L
    z_fin = centre_z(y_fte)
    fin = _Surface(
        (0, y_fte - cf, z_fin), (0, 0, 1), hf, cf, cf * fin_taper, fin_sweep, (1, 0, 0), rng.uniform(0.08, 0.12)
    )
    spec.add("tail", fin.mesh())
    spec.kp("fin_top", fin.tip_point())

    stab_sweep = np.deg2rad(rng.uniform(10, 40) if wing != "straight" else rng.uniform(0, 15))
    stab_dihedral = np.deg2rad(rng.uniform(0, 6))
    stab_tc = rng.uniform(0.07, 0.1)
    if t_tail:
        u_s = 1.0 - max(0.05, 1.5 * stab_tc * cf * fin_taper / hf)
        fin_le, _, fin_te, _ = fin.section(u_s)
        crh = (fin_te[1] - fin_le[1]) * rng.uniform(0.8, 1.1)
        stab_root = np.array([0.0, fin_le[1] + 0.05 * crh, fin_le[2]])
    else:
        crh = rng.uniform(0.5, 0.8) * cf
        y_ste = y1 - rng.uniform(0.01, 0.05) * L
        stab_root = np.array([0.0, y_ste - crh, centre_z(y_ste) + rng.uniform(0.0, 0.3) * radius(y_ste)])
    sh = float(np.clip(rng.uniform(0.3, 0.45) * span, 0.1 * L, 0.2 * L))
    cth = crh * rng.uniform(0.35, 0.6)
    for side, s in (("left", 1), ("right", -1)):
        direction = (s * np.cos(stab_dihedral), 0, np.sin(stab_dihedral))
        stab = _Surface(stab_root, direction, sh, crh, cth, stab_sweep, (0, 0, 1), stab_tc)
        spec.add("tail", stab.mesh())
        spec.kp(f"stabilizer_tip_{side}", stab.tip_point())
    y_stab_le = stab_root[1] if not t_tail else y_ts

    # Main wing: vertical position, dihedral, placement along the fuselage.
    if wing == "delta":
        position = "mid"
    elif engines == "rear2":
        position = "low"
    else:
        position = str(rng.choice(["low", "high"], p=(0.65, 0.35)))
    z_w = rng.uniform(*{"low": (-0.65, -0.45), "mid": (-0.3, -0.1), "high": (0.5, 0.68)}[position]) * rf
    dihedral = np.deg2rad(rng.uniform(0, 3) if position == "high" else rng.uniform(2, 7))
    y_wle = y0 + (rng.uniform(0.28, 0.36) if engines == "rear2" else rng.uniform(0.3, 0.42)) * L
    y_wle = max(y0 + (nl + 0.03) * L, min(y_wle, y_stab_le - 0.03 * L - cr))
    wing_tc = rng.uniform(0.08, 0.13)
    wings = {}
    for side, s in (("left", 1), ("right", -1)):
        wings[side] = _Surface(
            (0, y_wle, z_w),
            (s * np.cos(dihedral), 0, np.sin(dihedral)),
            span,
            cr,
            cr * taper,
            sweep,
            (0, 0, 1),
            wing_tc,
        )
        spec.add("wing", wings[side].mesh())
        spec.kp(f"wing_tip_{side}", wings[side].tip_point())
    # Wing root keypoint: where the upper front face leaves the fuselage (plus a small margin).
    v = 0.35
    z_top = wings["left"].front_upper_point(0.0, v)[2]
    x_exit = np.sqrt(max(rf**2 - z_top**2, 0.0))
    spec.kp("wing_root_front_left", wings["left"].front_upper_point((x_exit + 0.04 * span) / span, v))

    # Canopy on slender fighter-like fuselages.
    if wing == "delta":
        yc = y0 + (nl + rng.uniform(-0.04, 0.02)) * L
        lc = rng.uniform(0.1, 0.16) * L
        spec.add(
            "body",
            loft(
                [(0, yc, 0.55 * rf), (0, yc + 0.3 * lc, 0.8 * rf), (0, yc + lc, 0.6 * rf)],
                [(0.05 * rf, 0.05 * rf), (0.55 * rf, 0.55 * rf), (0.05 * rf, 0.05 * rf)],
                sections=16,
            ),
        )

    # Engines.
    re = rng.uniform(0.45, 0.7) * rf
    le_len = rng.uniform(3.0, 4.5) * re
    front = {}

    def nacelle(centre_front):
        """Nacelle along +y from its intake lip at ``centre_front``; returns the intake face centre."""
        inlet = 0.04 * le_len
        profile = [
            (0.8 * re, inlet),
            (0.92 * re, 0.0),
            (re, 0.12 * le_len),
            (re, 0.65 * le_len),
            (0.7 * re, le_len),
            (0.45 * re, le_len),
        ]
        spec.add("engine", revolve(profile, center=centre_front, axis=(0, 1, 0), sections=24))
        return np.asarray(centre_front, dtype=np.float64) + np.array([0.0, inlet, 0.0])

    if engines in ("wing2", "wing4"):
        us = [max(rng.uniform(0.25, 0.38), (rf + 1.5 * re) / span)]
        if engines == "wing4":
            us.append(max(rng.uniform(0.55, 0.68), us[0] + 3.0 * re / span))
        for k, u in enumerate(us):
            le, _, te, low = wings["left"].section(u)  # the right wing mirrors it
            y_f = le[1] - rng.uniform(0.3, 0.6) * le_len
            z_e = low[2] - rng.uniform(0.25, 0.5) * re - re
            y_p0, y_p1 = y_f + 0.25 * le_len, min(y_f + 0.9 * le_len, te[1] - 0.3 * (te[1] - le[1]))
            for side, s in (("left", 1), ("right", -1)):
                face = nacelle((s * le[0], y_f, z_e))
                if k == 0:
                    front[side] = face
                # Pylon from inside the nacelle up to the wing's mid-plane.
                spec.add(
                    "engine",
                    box(
                        (s * le[0], (y_p0 + y_p1) / 2, (z_e + 0.6 * re + le[2]) / 2),
                        (0.25 * re, y_p1 - y_p0, le[2] - z_e - 0.6 * re),
                    ),
                )
    elif engines == "rear2":
        x_e = rf + rng.uniform(0.5, 1.0) * re + re
        te_y = wings["left"].section(min(1.0, (x_e + re) / span))[2][1]
        y_front = min(te_y + 0.03 * L, y1 - le_len - 0.03 * L)
        z_e = centre_z(y_front) + rng.uniform(0.2, 0.45) * rf
        for side, s in (("left", 1), ("right", -1)):
            front[side] = nacelle((s * x_e, y_front, z_e))
            # Horizontal pylon from the fuselage's centre plane into the nacelle.
            spec.add(
                "engine",
                box((s * (x_e - re) / 2, y_front + 0.55 * le_len, z_e), (x_e - 0.6 * re, 0.4 * le_len, 0.25 * re)),
            )
    spec.kp("engine_front_left", front.get("left"))
    spec.kp("engine_front_right", front.get("right"))

    spec.style.update(
        wing=wing,
        engines=engines,
        tail="T" if t_tail else "conventional",
        wing_position=position,
        fuselage_radius=rf,
        nose_length=nl,
        wing_sweep_deg=float(np.rad2deg(sweep)),
        wing_span=float(2 * span),
        wing_root_chord=cr,
        wing_taper=taper,
        wing_dihedral_deg=float(np.rad2deg(dihedral)),
        fin_height=hf,
        stabilizer_span=2 * sh,
    )
    return spec
