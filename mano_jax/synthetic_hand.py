"""A procedural stand-in for the MANO hand with MANO's exact array shapes and conventions.

**This is not MANO.** It lets the demo and the tests run without the official model files (which
cannot be redistributed); real datasets (HO-3D, InterHand2.6M) need the official
``MANO_RIGHT.pkl``/``MANO_LEFT.pkl`` (``mano_jax.load``).

What it shares with MANO: 778 vertices, 1538 faces, 16 joints with MANO's kinematic tree and
joint order (0 wrist, 1-3 index, 4-6 middle, 7-9 pinky, 10-12 ring, 13-15 thumb), the fingertip
vertices at MANO's indices (right 745, 317, 444, 556, 673; left 745, 317, 445, 556, 673), metres,
identity rest orientation of every joint, 10 shape coefficients, ``lrotmin`` pose correctives, a
45x45 PCA pose basis with ``hands_mean``. The right hand is laid out like MANO's: fingers along
-x, palm facing -y, thumb towards +z, so a positive rotation about z flexes the fingers towards
the palm. The left hand is the exact mirror image (x -> -x; axis-angle (a, b, c) -> (a, -b, -c)).

Geometry: a palm tube (closed at the wrist) whose distal ring splits, through three web paths
between the fingers, into four finger tubes with rounded tips, plus a thumb capsule rooted in the
thenar region. Every edge is shared by exactly two faces. A closed triangle mesh with 1538 faces
uses at most 773 vertices (Euler: F = 2V - 4 per closed genus-0 part, here two parts), so five of
the 778 vertices (indices 773-777) lie inside the palm and belong to no face.

Shape coefficients (``betas``, each ~N(0, 1) gives a visible, realistic variation):
  0 overall size (+-5 %), 1 finger lengths (+-6 %), 2 palm width (+-6 %), 3 thickness (+-8 %),
  4 palm length (+-5 %), 5 thumb length (+-6 %), 6 index vs ring length (+-4 %),
  7 finger thickness (+-7 %), 8 palm thickness (+-8 %), 9 pinky length (+-6 %).
Sizes at betas = 0: wrist joint to middle fingertip 19.0 cm, palm 8.2 cm wide at the knuckles.

Pose: ``hands_mean``/``hands_components`` are the mean and principal axes of a distribution of
natural finger poses (flexion-dominated, fingers correlated through a shared grasp variable,
distal joints coupled to proximal ones, limited abduction and twist); ``synthetic_pose_std``
gives the standard deviation of each PCA coefficient under it, so
``hands_mean + (std * z) @ hands_components`` with z ~ N(0, I) samples (a Gaussian fit of) it.
"""

from __future__ import annotations

import functools

import numpy as np

from mano_jax import constants as C
from mano_jax.model import ManoModel, make_model

# ----------------------------------------------------------------------------- layout (right hand)

_FINGERS = ("index", "middle", "ring", "pinky")          # tubes branching from the palm
_FINGER_JOINT0 = {"index": 1, "middle": 4, "ring": 10, "pinky": 7}
_THUMB_JOINT0 = 13
_TIP_ORDER = ("thumb", "index", "middle", "ring", "pinky")   # order of TIP_VERTEX_IDS

_MCP_XZ = {"index": (-0.0900, 0.0260), "middle": (-0.0930, 0.0040),
           "ring": (-0.0880, -0.0170), "pinky": (-0.0790, -0.0350)}
_FAN = {"index": 0.10, "middle": 0.0, "ring": -0.08, "pinky": -0.17}         # rad, towards +z
_SEG = {"index": (0.040, 0.024, 0.022), "middle": (0.045, 0.028, 0.024),
        "ring": (0.042, 0.026, 0.023), "pinky": (0.033, 0.019, 0.020)}       # metres
_RADIUS = {"index": 0.0098, "middle": 0.0100, "ring": 0.0093, "pinky": 0.0083}
_RINGS = {"index": 10, "middle": 10, "ring": 10, "pinky": 9}               # rings per finger tube
_N_FINGER = 12       # vertices per finger ring
_N_PALM = 30         # vertices per palm ring
_N_THUMB = 14        # vertices per thumb ring
_THUMB_RINGS = 8
_PALM_T = (0.0, 0.22, 0.44, 0.66, 0.86)                 # proximal palm rings (fraction wrist->knuckles)
_N_UNUSED = 5

# Shape coefficient k multiplies parameter k by (1 + _BETA_SCALE[k] * beta_k).
_BETA_SCALE = np.array([0.05, 0.06, 0.06, 0.08, 0.05, 0.06, 0.04, 0.07, 0.08, 0.06])


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _superellipse(theta: np.ndarray, e: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(theta), np.sin(theta)
    return np.sign(c) * np.abs(c) ** e, np.sign(s) * np.abs(s) ** e


def _inv_superellipse_cos(u: np.ndarray, e: float) -> np.ndarray:
    """Angle in [0, pi] whose superellipse cosine coordinate is u."""
    return np.arccos(np.sign(u) * np.abs(u) ** (1.0 / e))


class _Layout:
    """Joint positions and part dimensions for one setting of the shape parameters."""

    def __init__(self, beta: np.ndarray):
        f = 1.0 + _BETA_SCALE * beta
        size, flen, pwid, thick, plen, tlen, ir, fthick, pthick, plk = f
        self.size = size
        self.palm_width = pwid
        self.palm_thick = thick * pthick
        self.finger_thick = thick * fthick
        self.plen = plen
        self.J = np.zeros((C.NUM_JOINTS, 3))
        self.dirs, self.seg, self.radius, self.mcp = {}, {}, {}, {}
        for name in _FINGERS:
            x, z = _MCP_XZ[name]
            mcp = np.array([x * plen, 0.0, z * pwid])
            a = _FAN[name]
            d = np.array([-np.cos(a), 0.0, np.sin(a)])
            scale = flen * {"index": ir, "ring": 2.0 - ir, "pinky": plk}.get(name, 1.0)
            seg = np.asarray(_SEG[name]) * scale
            j0 = _FINGER_JOINT0[name]
            self.J[j0] = mcp
            self.J[j0 + 1] = mcp + seg[0] * d
            self.J[j0 + 2] = mcp + (seg[0] + seg[1]) * d
            self.dirs[name], self.seg[name], self.mcp[name] = d, seg, mcp
            self.radius[name] = _RADIUS[name] * self.finger_thick
        # thumb: CMC in the thenar region, pointing distally, radially and a little palmar
        cmc = np.array([-0.021 * plen, -0.007 * self.palm_thick, 0.0165 * pwid])
        dt = _normalize(np.array([-0.76, -0.22, 0.60]))
        tseg = np.array([0.042, 0.032, 0.027]) * tlen * flen ** 0.5
        self.J[13], self.J[14], self.J[15] = cmc, cmc + tseg[0] * dt, cmc + (tseg[0] + tseg[1]) * dt
        self.dirs["thumb"], self.seg["thumb"], self.mcp["thumb"] = dt, tseg, cmc
        # thumb pad direction (towards the palm and the fingers), orthogonal to dt
        p = np.array([0.0, -0.5, -0.85])
        self.thumb_pad = _normalize(p - p.dot(dt) * dt)


def _finger_frame(d: np.ndarray, dorsal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lateral, dorsal) unit vectors orthogonal to the finger axis d."""
    n = _normalize(dorsal - dorsal.dot(d) * d)
    return np.cross(d, n), n


class _Builder:
    """Builds vertex positions (and, once, the topology and per-vertex annotations)."""

    def __init__(self):
        self.pos: list[np.ndarray] = []
        self.info: list[tuple] = []       # per vertex: (part, name, axial s) for skinning

    def add(self, p: np.ndarray, part: str, name: str, s: float) -> int:
        self.pos.append(np.asarray(p, np.float64))
        self.info.append((part, name, float(s)))
        return len(self.pos) - 1

    def add_many(self, p: np.ndarray, part: str, name: str, s) -> list[int]:
        n0 = len(self.pos)
        s = np.broadcast_to(np.asarray(s, np.float64), (len(p),))
        self.pos.extend(np.asarray(p, np.float64))
        self.info.extend((part, name, float(si)) for si in s)
        return list(range(n0, len(self.pos)))


def _palm_section(lay: _Layout, t: float) -> tuple[float, float, float, float]:
    """(z_center, half_width, y_center, half_thickness) of the palm cross-section at fraction t."""
    zi = lay.mcp["index"][2] + 1.05 * lay.radius["index"]
    zp = lay.mcp["pinky"][2] - 1.15 * lay.radius["pinky"]
    w_hi, w_lo = 0.0215 * lay.palm_width, -0.0290 * lay.palm_width     # wrist
    hi, lo = w_hi + (zi - w_hi) * t ** 0.8, w_lo + (zp - w_lo) * t ** 0.8
    top = (0.0105 + 0.003 * np.sin(np.pi * t) + 0.0005 * t) * lay.palm_thick
    bot = -(0.0110 + 0.0055 * np.sin(np.pi * min(1.0, 1.15 * t)) + 0.003 * t) * lay.palm_thick
    return 0.5 * (hi + lo), 0.5 * (hi - lo), 0.5 * (top + bot), 0.5 * (top - bot)


def _knuckle_x(lay: _Layout, z: np.ndarray) -> np.ndarray:
    zs = np.array([lay.mcp[n][2] for n in _FINGERS])[::-1]
    xs = np.array([lay.mcp[n][0] for n in _FINGERS])[::-1]
    slope_lo = (xs[1] - xs[0]) / (zs[1] - zs[0])
    slope_hi = (xs[-1] - xs[-2]) / (zs[-1] - zs[-2])
    x = np.interp(z, zs, xs)
    x = np.where(z < zs[0], xs[0] + slope_lo * (z - zs[0]), x)
    return np.where(z > zs[-1], xs[-1] + slope_hi * (z - zs[-1]), x)


_E_PALM = 0.55     # superellipse exponent of palm sections (boxy)
_E_FINGER = 0.85


def _build(beta: np.ndarray):
    """Vertex positions for shape ``beta``; also returns topology/annotations (same for all beta).

    The mesh is built in this order (the vertex ids follow it): the palm's rings and the wrist cap,
    the webs between the fingers, each finger (index to pinky) from its base loop to its tip, the
    thumb, and a few unreferenced vertices inside the palm."""
    lay = _Layout(beta)
    b = _Builder()
    faces: list[tuple[int, int, int]] = []
    psi, borders, dorsal_z, kinds = _palm_angles(lay)
    palm_rings, x_w = _palm(lay, b, faces, psi)
    loops = _finger_base_loops(lay, b, palm_rings[-1], borders, dorsal_z, kinds)
    tips = {}
    joint_rings: dict[int, list[int]] = {}        # joint index -> vertex ids of the ring at that joint
    for name in _FINGERS:
        tips[name] = _finger(lay, b, faces, name, loops[name], palm_rings[-2], joint_rings)
    tips["thumb"] = _thumb(lay, b, faces, joint_rings)
    joint_rings[0] = palm_rings[0] + palm_rings[1]
    # --- unreferenced interior vertices (inside the palm)
    for k in range(_N_UNUSED):
        t = 0.3 + 0.1 * k
        zc_t, _, yc_t, _ = _palm_section(lay, t)
        p = np.array([x_w + t * (-0.085 * lay.plen - x_w), yc_t, zc_t])
        b.add(p, "interior", "palm", -1.0)

    pos = np.stack(b.pos) * lay.size
    return pos, lay.J * lay.size, np.asarray(faces, np.int64), b.info, tips, joint_rings, lay


def _palm_angles(lay: _Layout) -> tuple[np.ndarray, list[float], list[float], list[tuple]]:
    """The distal palm ring's layout: its 30 superellipse angles ``psi``, the 3 web (border) z
    positions between the fingers, the 11 dorsal z targets from the index side to the pinky side and
    their kinds (("int", finger) or ("border", k))."""
    zf = {n: lay.mcp[n][2] for n in _FINGERS}
    borders = [0.5 * (zf["index"] + zf["middle"]), 0.5 * (zf["middle"] + zf["ring"]),
               0.5 * (zf["ring"] + zf["pinky"])]
    zc, hw, yc, hh = _palm_section(lay, 1.0)
    edges = [zc + hw, *borders, zc - hw]     # finger f spans (edges[f], edges[f+1])
    dorsal_z = []          # 11 points from the index side to the pinky side
    kinds: list[tuple] = []             # ("int", finger) or ("border", k)
    for fi, name in enumerate(_FINGERS):
        hi, lo = edges[fi], edges[fi + 1]
        zc_f = zf[name]
        hs_hi, hs_lo = hi - zc_f, zc_f - lo
        if fi == 0:
            pts = [zc_f + 0.55 * hs_hi, zc_f - 0.35 * hs_lo]
        elif fi == 3:
            pts = [zc_f + 0.35 * hs_hi, zc_f - 0.55 * hs_lo]
        else:
            pts = [zc_f + 0.4 * hs_hi, zc_f - 0.4 * hs_lo]
        dorsal_z += pts
        kinds += [("int", name), ("int", name)]
        if fi < 3:
            dorsal_z.append(borders[fi])
            kinds.append(("border", fi))
    u = (np.asarray(dorsal_z) - zc) / hw                      # in (-1, 1)
    psi_d = _inv_superellipse_cos(u, _E_PALM)                 # increasing from ~0 to ~pi
    side = np.linspace(0, 1, 6)[1:-1]
    psi_side_ulnar = psi_d[-1] + side * (2 * np.pi - 2 * psi_d[-1])
    psi_p = 2 * np.pi - psi_d[::-1]
    psi_side_radial = psi_p[-1] + side * (2 * np.pi + psi_d[0] - psi_p[-1])
    psi = np.concatenate([psi_d, psi_side_ulnar, psi_p, psi_side_radial])        # 30 angles
    assert psi.size == _N_PALM and np.all(np.diff(psi) > 0)
    return psi, borders, dorsal_z, kinds


def _palm(lay: _Layout, b: _Builder, faces: list, psi: np.ndarray) -> tuple[list[list[int]], float]:
    """The palm's rings (proximal to distal; vertex s = signed axial distance to the knuckle line)
    and the wrist cap, with their faces; returns the rings' vertex ids and the wrist's x."""
    x_w = 0.018 * lay.plen
    palm_rings = []
    for t in (*_PALM_T, 1.0):
        zc_t, hw_t, yc_t, hh_t = _palm_section(lay, t)
        cz, cy = _superellipse(psi, _E_PALM)
        z = zc_t + hw_t * cz
        y = yc_t + hh_t * cy
        if t < 1.0:
            x_line = x_w + t * (_knuckle_x(lay, z) - x_w)
            x = x_line
        else:
            x = _knuckle_x(lay, z) - np.where(cy < 0, 0.004 * -cy, 0.0) * lay.plen
        palm_rings.append(b.add_many(np.stack([x, y, z], 1), "palm", "palm", x - _knuckle_x(lay, z)))
    # wrist cap
    zc0, _, yc0, _ = _palm_section(lay, 0.0)
    cap = b.add(np.array([x_w + 0.004 * lay.plen, yc0, zc0]), "palm", "palm", 1.0)
    r0 = palm_rings[0]
    for k in range(_N_PALM):
        faces.append((cap, r0[(k + 1) % _N_PALM], r0[k]))
    for ra, rb in zip(palm_rings[:-1], palm_rings[1:], strict=True):
        for k in range(_N_PALM):
            k1 = (k + 1) % _N_PALM
            faces += [(ra[k], ra[k1], rb[k1]), (ra[k], rb[k1], rb[k])]
    return palm_rings, x_w


def _finger_base_loops(lay: _Layout, b: _Builder, distal: list[int], borders: list[float],
                       dorsal_z: list[float], kinds: list[tuple]) -> dict[str, list[int]]:
    """The web paths between the fingers (dorsal border -> palmar border, 2 interior vertices each)
    and each finger's base loop (12 vertices, ordered like the palm ring ``distal``)."""
    n_d = len(dorsal_z)
    border_d = [distal[i] for i, kd in enumerate(kinds) if kd[0] == "border"]
    pal_start = n_d + 4                                   # palmar row starts after ulnar side
    border_p = [distal[pal_start + (n_d - 1 - i)] for i, kd in enumerate(kinds) if kd[0] == "border"]
    webs = []
    for k in range(len(borders)):
        pd, pp = b.pos[border_d[k]], b.pos[border_p[k]]
        ids = []
        for frac in (1 / 3, 2 / 3):
            p = (1 - frac) * pd + frac * pp
            p = p + np.array([-0.011 * lay.plen, 0.0, 0.0])
            p[1] *= 0.75
            ids.append(b.add(p, "web", f"web{k}", p[0] - _knuckle_x(lay, p[2:3])[0]))
        webs.append(ids)

    def seg(a, c):
        """distal ring indices a..c inclusive, wrapping."""
        out, i = [], a
        while True:
            out.append(distal[i % _N_PALM])
            if i % _N_PALM == c % _N_PALM:
                return out
            i += 1

    bd_idx = [i for i, kd in enumerate(kinds) if kd[0] == "border"]           # dorsal indices
    bp_idx = [pal_start + (n_d - 1 - i) for i in bd_idx]                      # palmar indices
    return {
        "index": seg(bp_idx[0], _N_PALM + bd_idx[0]) + webs[0],
        "middle": seg(bd_idx[0], bd_idx[1]) + webs[1] + seg(bp_idx[1], bp_idx[0]) + webs[0][::-1],
        "ring": seg(bd_idx[1], bd_idx[2]) + webs[2] + seg(bp_idx[2], bp_idx[1]) + webs[1][::-1],
        "pinky": seg(bd_idx[2], bp_idx[2]) + webs[2][::-1],
    }


def _finger(lay: _Layout, b: _Builder, faces: list, name: str, loop: list[int], last_palm_ring: list[int],
            joint_rings: dict[int, list[int]]) -> int:
    """Finger ``name``'s rings from its base ``loop`` to its tip, with their faces; adds the rings at
    its joints to ``joint_rings``; returns the tip vertex."""
    assert len(loop) == _N_FINGER, (name, len(loop))
    d, mcp, r = lay.dirs[name], lay.mcp[name], lay.radius[name]
    lat, dor = _finger_frame(d, np.array([0.0, 1.0, 0.0]))
    rel = np.stack([b.pos[i] - mcp for i in loop])
    ang = np.unwrap(np.arctan2(rel @ dor, rel @ lat))
    steps = np.diff(np.append(ang, ang[0] + np.sign(ang[-1] - ang[0]) * 2 * np.pi))
    assert np.all(steps > 0) or np.all(steps < 0), f"{name}: base loop is not star-shaped"
    L1, L2, L3 = lay.seg[name]
    L = L1 + L2 + L3
    r_tip = 0.80 * r
    nr = _RINGS[name]
    s_vals = _ring_positions(0.012, L, r_tip, nr, (L1, L1 + L2))
    prev = loop
    j0 = _FINGER_JOINT0[name]
    for si in s_vals:
        radius = r * (1.0 - 0.2 * si / L)
        cap_start = L - r_tip
        if si > cap_start:
            radius *= np.sqrt(max(1.0 - ((si - cap_start) / r_tip) ** 2, 0.0))
        cx, cy = _superellipse(ang, _E_FINGER)
        centre = mcp + si * d
        ring = b.add_many(centre + radius * (np.outer(cx, lat) + 0.86 * np.outer(cy, dor)),
                          "finger", name, si)
        _strip(faces, prev, ring)
        prev = ring
        for jl, sj in enumerate((0.0, L1, L1 + L2)):
            if abs(si - sj) < 1e-9 or (jl == 0 and si == s_vals[0]):
                joint_rings.setdefault(j0 + jl, []).extend(ring if jl else ring + loop)
    # the knuckle joint sits between the palm's last proximal ring and the finger's first ring
    zs = [b.pos[i][2] for i in loop]
    joint_rings[j0] += [i for i in last_palm_ring if min(zs) <= b.pos[i][2] <= max(zs)]
    tip = b.add(mcp + L * d, "finger", name, L)
    for k in range(_N_FINGER):
        faces.append((prev[k], prev[(k + 1) % _N_FINGER], tip))
    return tip


def _thumb(lay: _Layout, b: _Builder, faces: list, joint_rings: dict[int, list[int]]) -> int:
    """The thumb capsule (a base apex, rings, a tip) with its faces; sets its joints' rings in
    ``joint_rings``; returns the tip vertex."""
    dt, cmc, tseg = lay.dirs["thumb"], lay.mcp["thumb"], lay.seg["thumb"]
    lat, dor = _finger_frame(dt, -lay.thumb_pad)
    L1, L2, L3 = tseg
    L = L1 + L2 + L3
    s0 = -0.022 * lay.plen
    r_tip = 0.0092 * lay.finger_thick
    base_apex = b.add(cmc + s0 * dt + np.array([0.0, 0.002, -0.002]), "thumb", "thumb", s0)
    s_vals = np.array([-0.015, 0.0, 0.012, 0.026, L1, L1 + 0.5 * L2, L1 + L2, L - 0.45 * r_tip])
    s_vals[:4] *= lay.plen
    ang = np.linspace(0, 2 * np.pi, _N_THUMB, endpoint=False) + np.pi / _N_THUMB
    prev: list[int] | None = None
    for si in s_vals:
        radius = np.interp(si, [s0, -0.015, 0.0, 0.012, 0.026, L1, L1 + L2, L - r_tip],
                           [0.004, 0.0125, 0.0165, 0.0165, 0.0145, 0.0118, 0.0106, r_tip]) * lay.finger_thick
        if si > L - r_tip:
            radius = r_tip * np.sqrt(max(1.0 - ((si - (L - r_tip)) / r_tip) ** 2, 0.0))
        cx, cy = _superellipse(ang, 0.9)
        centre = cmc + si * dt
        ring = b.add_many(centre + radius * (np.outer(cx, lat) + 0.88 * np.outer(cy, dor)),
                          "thumb", "thumb", si)
        if prev is None:
            for k in range(_N_THUMB):
                faces.append((base_apex, ring[(k + 1) % _N_THUMB], ring[k]))
        else:
            _strip(faces, prev, ring)
        prev = ring
        for jl, sj in enumerate((0.0, L1, L1 + L2)):
            if abs(si - sj) < 1e-9:
                joint_rings[_THUMB_JOINT0 + jl] = ring
    assert prev is not None  # s_vals is not empty
    tip = b.add(cmc + L * dt, "thumb", "thumb", L)
    for k in range(_N_THUMB):
        faces.append((prev[k], prev[(k + 1) % _N_THUMB], tip))
    return tip


def _ring_positions(s_first: float, L: float, r_tip: float, n: int, joints: tuple) -> np.ndarray:
    """n ring positions from s_first to just before the tip, including the joint positions."""
    s_last = L - 0.40 * r_tip
    base = np.linspace(s_first, s_last, n)
    for sj in joints:   # snap the nearest interior ring onto each joint
        k = 1 + int(np.argmin(np.abs(base[1:-1] - sj)))
        base[k] = sj
    return np.sort(base)


def _strip(faces: list, ra: list[int], rb: list[int]) -> None:
    n = len(ra)
    for k in range(n):
        k1 = (k + 1) % n
        faces += [(ra[k], ra[k1], rb[k1]), (ra[k], rb[k1], rb[k])]


# ----------------------------------------------------------------------------- static annotations

def _orient_outward(faces: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Make winding consistent per connected component and normals point outwards."""
    faces = faces.copy()
    edge_faces: dict[tuple[int, int], list[int]] = {}
    for fi, f in enumerate(faces):
        for a, c in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])):
            edge_faces.setdefault((min(a, c), max(a, c)), []).append(fi)
    seen = np.zeros(len(faces), bool)
    for start in range(len(faces)):
        if seen[start]:
            continue
        comp, stack = [start], [start]
        seen[start] = True
        while stack:
            fi = stack.pop()
            f = faces[fi]
            for a, c in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])):
                for g in edge_faces[(min(a, c), max(a, c))]:
                    if seen[g]:
                        continue
                    ga = list(faces[g])
                    # consistent neighbours traverse the shared edge in opposite directions
                    same = any((ga[i], ga[(i + 1) % 3]) == (a, c) for i in range(3))
                    if same:
                        faces[g] = faces[g][::-1]
                    seen[g] = True
                    comp.append(g)
                    stack.append(g)
        tri = pos[faces[comp]]
        vol = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum()
        if vol < 0:
            faces[comp] = faces[comp][:, ::-1]
    return faces


def _skinning_weights(info, z_all: np.ndarray, lay: _Layout) -> np.ndarray:
    """Smooth LBS weights from each vertex's part and axial coordinate (static, at betas = 0)."""
    W = np.zeros((len(info), C.NUM_JOINTS))
    zf = np.array([lay.mcp[n][2] for n in _FINGERS])
    for v, (part, name, s) in enumerate(info):
        if part in ("palm", "web", "interior"):
            # which finger(s): hat functions over the knuckle z positions
            z = z_all[v]
            hat = np.interp(z, zf[::-1], np.arange(4)[::-1].astype(float))
            lo = int(np.clip(np.floor(hat), 0, 3))
            hi = min(lo + 1, 3)
            fr = hat - lo
            fw = np.zeros(4)
            fw[lo] += 1 - fr
            fw[hi] += fr
            blend = _smoothstep((-s + 0.018) / 0.036) if part != "interior" else 0.0
            W[v, 0] = 1.0 - blend
            for fi, n in enumerate(_FINGERS):
                W[v, _FINGER_JOINT0[n]] += blend * fw[fi]
            continue
        if part == "finger":
            j0, L1, L2 = _FINGER_JOINT0[name], *lay.seg[name][:2]
            r = lay.radius[name]
            knots, width0 = (0.0, L1, L1 + L2), 0.010
        else:
            j0, L1, L2 = _THUMB_JOINT0, *lay.seg["thumb"][:2]
            r = 0.011
            knots, width0 = (0.0, L1, L1 + L2), 0.014
        S = [_smoothstep((s - k + w) / (2 * w)) for k, w in zip(knots, (width0, 0.55 * r, 0.5 * r),
                                                                 strict=True)]
        W[v, 0] = 1 - S[0]
        W[v, j0] = S[0] - S[1]
        W[v, j0 + 1] = S[1] - S[2]
        W[v, j0 + 2] = S[2]
    return W / W.sum(1, keepdims=True)


def _joint_regressor(pos: np.ndarray, joints: np.ndarray, joint_rings: dict) -> np.ndarray:
    """Rows reproduce the joints exactly from the template: min-norm correction of ring averages."""
    R = np.zeros((C.NUM_JOINTS, pos.shape[0]))
    for j in range(C.NUM_JOINTS):
        ids = np.asarray(sorted(set(joint_rings[j])))
        P = pos[ids]
        A = np.concatenate([P.T, np.ones((1, len(ids)))], 0)       # (4, k)
        target = np.concatenate([joints[j], [1.0]])
        keep = np.ones(len(ids), bool)
        for _ in range(len(ids)):          # drop vertices that would get negative weights
            w0 = np.where(keep, 1.0 / keep.sum(), 0.0)
            Ak = A[:, keep]
            w = w0.copy()
            w[keep] += np.linalg.lstsq(Ak, target - A @ w0, rcond=None)[0]   # min-norm correction
            if w.min() >= 0:
                break
            keep &= w > 0
        assert w.min() >= 0 and np.allclose(A @ w, target), f"joint {j} outside its vertex ring"
        R[j, ids] = w
    return R


def _pose_correctives(pos: np.ndarray, W: np.ndarray, lay: _Layout) -> np.ndarray:
    """Small pose correctives: flexing a joint bulges its palmar side and its knuckle.

    The offset is linear in sin(flexion) = a . vee(R - R^T) / 2, i.e. linear in the lrotmin
    features (R - I), as MANO's ``posedirs`` are.
    """
    P = np.zeros((pos.shape[0], 3, C.NUM_POSE_FEATS))
    parents = C.PARENTS
    for j in range(1, C.NUM_JOINTS):
        if 13 <= j:
            name, d = "thumb", lay.dirs["thumb"]
            pad = lay.thumb_pad
        else:
            name = next(n for n in _FINGERS if _FINGER_JOINT0[n] <= j < _FINGER_JOINT0[n] + 3)
            d, pad = lay.dirs[name], np.array([0.0, -1.0, 0.0])
        axis = np.cross(d, pad)                       # flexion axis: d -> pad for positive angle
        # coefficient matrix Cm with sum(Cm * (R - I)) = axis . vee(R) = sin(flexion)
        Cm = np.zeros((3, 3))
        Cm[2, 1], Cm[1, 2] = axis[0] / 2, -axis[0] / 2
        Cm[0, 2], Cm[2, 0] = axis[1] / 2, -axis[1] / 2
        Cm[1, 0], Cm[0, 1] = axis[2] / 2, -axis[2] / 2
        near = 4.0 * W[:, j] * W[:, parents[j]]        # 1 at the middle of the joint's blend zone
        rel = pos - lay.J[j] * lay.size
        rad = rel - np.outer(rel @ d, d)
        rad_n = rad / np.maximum(np.linalg.norm(rad, axis=1, keepdims=True), 1e-9)
        palmar = np.clip(rad_n @ pad, 0, None)
        dorsal = np.clip(-(rad_n @ pad), 0, None)
        amp = 0.0022 * palmar ** 2 + 0.0012 * dorsal ** 2          # metres at 90 degrees
        off = (near * amp)[:, None] * rad_n                           # outwards
        P[:, :, 9 * (j - 1):9 * j] = off[:, :, None] * Cm.reshape(1, 1, 9)
    return P


# ----------------------------------------------------------------------------- natural poses

def _natural_poses(lay: _Layout, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 45) finger axis-angle samples of relaxed/grasping hands (right hand, MANO order)."""
    out = np.zeros((n, 15, 3))
    grasp = np.clip(rng.normal(0.45, 0.30, n), -0.1, 1.25)             # shared across fingers
    spread = rng.normal(0.0, 0.10, n) * (1.0 - 0.6 * np.clip(grasp, 0, 1))
    spread_gain = {"index": 1.0, "middle": 0.0, "ring": -0.7, "pinky": -1.3}
    for k, name in enumerate(_FINGERS):
        d = lay.dirs[name]
        pad = np.array([0.0, -1.0, 0.0])
        flex_axis = np.cross(d, pad)
        abd_axis = np.array([0.0, 1.0, 0.0])                  # + moves the finger towards the thumb
        phi = grasp + 0.06 * k + rng.normal(0, 0.16, n)     # ulnar fingers flex a bit more
        mcp = 1.05 * phi + rng.normal(0, 0.08, n)
        pip = 1.25 * phi + rng.normal(0, 0.10, n)
        dip = 0.70 * pip + rng.normal(0, 0.05, n)
        abd = spread_gain[name] * spread + rng.normal(0, 0.04, n)
        j0 = _FINGER_JOINT0[name] - 1
        for lvl, fl in enumerate((mcp, pip, dip)):
            aa = fl[:, None] * flex_axis + rng.normal(0, 0.03, (n, 1)) * d
            if lvl == 0:
                aa = aa + abd[:, None] * abd_axis
            out[:, j0 + lvl] = aa
    # thumb: opposition/flexion at the CMC, flexion at MCP and IP, some palmar abduction
    dt = lay.dirs["thumb"]
    flex_axis = np.cross(dt, lay.thumb_pad)
    abd_axis = _normalize(np.cross(dt, np.array([0.0, 1.0, 0.0])))
    gt = 0.6 * grasp + 0.4 * rng.normal(0.45, 0.30, n)
    out[:, 12] = ((0.55 * gt + rng.normal(0, 0.10, n))[:, None] * flex_axis
                  + rng.normal(0.1, 0.15, n)[:, None] * abd_axis)
    out[:, 13] = (0.45 * gt + rng.normal(0, 0.10, n))[:, None] * flex_axis
    out[:, 14] = (0.65 * gt + rng.normal(0, 0.12, n))[:, None] * flex_axis
    out = out.reshape(n, 45)
    return out + rng.normal(0, 0.02, out.shape)                 # every direction has some spread


_N_POSE_SAMPLES = 4096


@functools.lru_cache(maxsize=8)
def _right_arrays(seed: int) -> dict[str, np.ndarray]:
    zero = np.zeros(C.NUM_BETAS)
    pos, joints, faces, info, tips, joint_rings, lay = _build(zero)
    n_used = pos.shape[0] - _N_UNUSED
    assert pos.shape[0] == C.NUM_VERTS, pos.shape
    # shape blend shapes: derivatives of the (smooth) builder w.r.t. each shape parameter
    h = 1e-6
    shapedirs = np.zeros((C.NUM_VERTS, 3, C.NUM_BETAS))
    for k in range(C.NUM_BETAS):
        e = np.zeros(C.NUM_BETAS)
        e[k] = h
        shapedirs[:, :, k] = (_build(e)[0] - pos) / h
    faces = _orient_outward(faces, pos)
    W = _skinning_weights(info, pos[:, 2] / lay.size, lay)
    Jr = _joint_regressor(pos, joints, joint_rings)
    posedirs = _pose_correctives(pos, W, lay)
    rng = np.random.default_rng(seed)
    poses = _natural_poses(lay, _N_POSE_SAMPLES, rng)
    mean = poses.mean(0)
    centred = poses - mean
    # (einsum, not BLAS: a first BLAS call can cost 100s of ms of thread start-up on a busy CPU)
    cov = np.einsum("ni,nj->ij", centred, centred, optimize=False) / (len(poses) - 1)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    Vt = evecs[:, order].T                                   # rows: principal axes
    sign = np.sign(Vt[np.arange(45), np.argmax(np.abs(Vt), axis=1)])
    comps = Vt * sign[:, None]
    std = np.sqrt(np.maximum(evals[order], 0.0))

    # Permutation: construction order -> MANO indices (tips at MANO's fingertip vertices).
    tip_ids = C.TIP_VERTEX_IDS["right"]
    new_of_old = np.full(C.NUM_VERTS, -1)
    for name, vid in zip(_TIP_ORDER, tip_ids, strict=True):
        new_of_old[tips[name]] = vid
    free_new = [i for i in range(n_used) if i not in set(tip_ids)]
    free_old = [i for i in range(n_used) if new_of_old[i] < 0]
    new_of_old[np.asarray(free_old)] = np.asarray(free_new)
    new_of_old[n_used:] = np.arange(n_used, C.NUM_VERTS)
    order = np.argsort(new_of_old)                      # old index at each new position
    assert faces.shape == (C.NUM_FACES, 3), faces.shape
    return dict(
        v_template=pos[order], shapedirs=shapedirs[order], posedirs=posedirs[order],
        J_regressor=Jr[:, order], weights=W[order], faces=new_of_old[faces].astype(np.int32),
        hands_components=comps, hands_mean=mean, pose_std=std)


def _mirror(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Left hand = mirror image (x -> -x) of the right; vertices 444 and 445 swapped."""
    s = np.array([-1.0, 1.0, 1.0])
    sij = (s[:, None] * s[None, :]).reshape(9)
    perm = np.arange(C.NUM_VERTS)
    perm[[444, 445]] = [445, 444]
    inv = np.argsort(perm)
    out = dict(
        v_template=a["v_template"][perm] * s,
        shapedirs=a["shapedirs"][perm] * s[None, :, None],
        posedirs=a["posedirs"][perm] * s[None, :, None] * np.tile(sij, 15)[None, None, :],
        J_regressor=a["J_regressor"][:, perm],
        weights=a["weights"][perm],
        faces=inv[a["faces"]][:, ::-1].astype(np.int32),      # mirroring flips the winding
        # M R(w) M = R(-M w) for the reflection M = diag(s): axis-angle (a, b, c) -> (a, -b, -c)
        hands_components=a["hands_components"] * np.tile(-s, 15)[None, :],
        hands_mean=a["hands_mean"] * np.tile(-s, 15),
        pose_std=a["pose_std"])
    return out


@functools.lru_cache(maxsize=8)
def _arrays(side: str, seed: int) -> dict[str, np.ndarray]:
    right = _right_arrays(seed)
    return right if side == "right" else _mirror(right)


def _check_side(side: str) -> None:
    if side not in ("right", "left"):
        raise ValueError(f"synthetic: side must be 'right' or 'left', got {side!r}")


def synthetic(side: str = "right", seed: int = 0) -> ManoModel:
    """The procedural stand-in MANO hand (see the module docstring). Deterministic, ~0.1 s.

    Args:
      side: "right" or "left" (the mirror image of the right hand).
      seed: seeds the natural-pose samples the PCA basis and ``hands_mean`` are fitted to.
    Returns:
      a ManoModel with MANO's array shapes, in metres.
    """
    _check_side(side)
    a = {k: v for k, v in _arrays(side, int(seed)).items() if k != "pose_std"}
    return make_model(a, side=side, source=f"synthetic({side!r}, seed={seed})")


def synthetic_pose_std(side: str = "right", seed: int = 0) -> np.ndarray:
    """(45,) standard deviation of each PCA coefficient of ``synthetic(side, seed)``.

    Under the natural finger-pose distribution the synthetic PCA basis was fitted to, the
    coefficients ``c = (pose45 - hands_mean) @ hands_components.T`` are uncorrelated with these
    standard deviations (radians, sorted decreasing). Sample natural poses as
    ``hands_mean + (synthetic_pose_std() * z) @ hands_components``, z ~ N(0, I).
    """
    _check_side(side)
    return _arrays(side, int(seed))["pose_std"].copy()
