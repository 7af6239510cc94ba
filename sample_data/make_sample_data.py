"""Generate a synthetic, lung-like exhale/inhale vessel point-cloud pair.

Usage::

    python sample_data/make_sample_data.py [--seed 0] [--out sample_data]

Everything is in mm, world RAS+ (+x patient Right, +y Anterior, +z Superior).
Steps:

1. Two half-ellipsoid lungs with a domed diaphragm (base at low z).
2. A random vessel tree per lung, grown from the hilum (radius ~6 mm -> 1 mm).
3. A smooth breathing motion (exhale -> inhale), checked for a positive Jacobian.
4. Two independent samplings of the tree (exhale = source, inhale = target),
   each with its own sensor noise and a few different distal branches missing.
5. Bifurcation landmarks in exhale and their images under the motion.

The same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyvista as pv
from vtkmodules.vtkIOLegacy import vtkPolyDataWriter

# Lung geometry: (centre x, lateral semi-axis a); the left lung is narrower (heart).
LUNGS = [(+80.0, 70.0), (-80.0, 62.0)]  # right lung at +x (RAS), left lung at -x
B_AP, HEIGHT, DOME = 100.0, 250.0, 25.0  # AP semi-axis, apex height, diaphragm dome height
N_POINTS = 10000  # points per phase
N_LANDMARKS = 80
N_MISSING = 4  # distal branches dropped per phase
NOISE_MM = 0.5


def inside(p, lung, margin=0.0):
    """True where points p (..., 3) lie inside `lung`, `margin` mm away from the wall."""
    cx, a = lung
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    q = ((x - cx) / (a - margin)) ** 2 + (y / (B_AP - margin)) ** 2 + (z / (HEIGHT - margin)) ** 2
    dome = DOME * np.clip(1.0 - ((x - cx) / a) ** 2 - (y / B_AP) ** 2, 0.0, None)
    return (q <= 1.0) & (z >= dome + margin)


def rotate_away(d, angle, phi):
    """Unit vector at `angle` (rad) from unit vector d, at azimuth phi around d."""
    e1 = np.cross(d, [1.0, 0.0, 0.0] if abs(d[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(d, e1)
    return np.cos(angle) * d + np.sin(angle) * (np.cos(phi) * e1 + np.sin(phi) * e2)


def grow(rng, segs, lung, p, d, r, parent):
    """Recursively grow a branch of radius r from p along d; append rows to `segs`.

    A branch is shortened until it stays inside the lung (so the tree is clipped to
    the domain), then splits into two thinner children at 20-60 degrees.
    """
    length = float(np.clip(r * rng.uniform(6.0, 9.0), 6.0, 45.0))
    ts = np.linspace(0.0, 1.0, 8)[:, None]
    while length >= 4.0 and not inside(p + ts * length * d, lung, margin=r + 2.0).all():
        length *= 0.7
    if length < 4.0:  # hit the pleura: no branch here
        return
    end = p + length * d
    me = len(segs)
    segs.append((p, end, r, parent))
    phi0 = rng.uniform(0.0, 2 * np.pi)
    for k in range(2):  # children splay in roughly opposite azimuths
        rc = r * rng.uniform(0.68, 0.85)  # ~Murray's law (r^3 = r1^3 + r2^3 gives 0.79)
        if rc < 1.0:
            continue
        angle = np.deg2rad(rng.uniform(20.0, 60.0))
        phi = phi0 + k * np.pi + rng.normal(0.0, 0.3)
        for _ in range(5):  # re-aim a child that would leave the lung at once (fills the domain)
            dc = rotate_away(d, angle, phi)
            if inside(end + 4.0 * rc * dc, lung, margin=rc + 2.0):
                break
            phi = rng.uniform(0.0, 2 * np.pi)
        grow(rng, segs, lung, end, dc, rc, me)


def build_tree(rng):
    """Vessel tree of both lungs as arrays p0, p1 (S, 3), radius (S,), parent (S,)."""
    segs = []
    for cx, a in LUNGS:
        side = np.sign(cx)  # +1 right lung, -1 left lung; lateral = side * x
        hilum = np.array([cx - side * 0.45 * a, -10.0, 0.55 * HEIGHT])
        # Five trunks per lung (upper ant./post., middle, lower lat./post.), like lobar vessels.
        for d in (
            [0.3 * side, 0.5, 1.0],
            [0.3 * side, -0.5, 1.0],
            [side, 0.8, -0.2],
            [0.6 * side, 0.1, -1.0],
            [0.2 * side, -0.8, -1.0],
        ):
            d = np.asarray(d) / np.linalg.norm(d)
            grow(rng, segs, (cx, a), hilum, d, 6.0, -1)
    p0, p1, r, parent = (np.array(v) for v in zip(*segs))
    return p0, p1, r, parent.astype(int)


def motion(p):
    """Exhale -> inhale displacement (mm) of points p (..., 3): a smooth polynomial/Gaussian field.

    The diaphragm descends (-z) by up to ~28 mm at the base (more dorsally), decaying
    quadratically to ~3 mm at the apex; the anterior chest wall moves up to ~4 mm +y
    (the spine is fixed) and the lungs widen laterally by up to ~3 mm.
    """
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    w = (1.0 - z / HEIGHT) ** 2  # 1 at the base, 0 at the apex
    dorsal = 1.0 + 0.15 * np.exp(-(((y + 60.0) / 70.0) ** 2))  # diaphragm moves more posteriorly
    uz = -(3.0 + 25.0 * w) * dorsal
    uy = 4.0 * (y + B_AP) / (2 * B_AP) * (0.5 + 0.5 * w)
    ux = 0.02 * x * (0.5 + 0.5 * w)
    return np.stack([ux, uy, uz], axis=-1)


def min_jacobian(step=2.0):
    """Minimum det(I + grad u) over a grid covering both lungs (central differences)."""
    axes = [
        np.arange(-160, 160 + step, step),
        np.arange(-110, 110 + step, step),
        np.arange(-10, HEIGHT + 10 + step, step),
    ]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    u = motion(grid)
    jac = np.empty(grid.shape[:3] + (3, 3))
    for i in range(3):
        for j, g in enumerate(np.gradient(u[..., i], step, step, step)):
            jac[..., i, j] = g + (i == j)
    det = np.linalg.det(jac)
    mask = inside(grid, LUNGS[0]) | inside(grid, LUNGS[1])
    return float(det[mask].min()), float(det.min())


def subtree(s, children):
    """Indices of segment s and all its descendants."""
    out, stack = [], [s]
    while stack:
        out.append(stack.pop())
        stack.extend(children[out[-1]])
    return out


def sample(rng, p0, p1, r, keep, n):
    """n tree points on kept segments (prob. ~ length * radius), jittered in the vessel disc."""
    w = np.linalg.norm(p1 - p0, axis=1) * r * keep
    s = rng.choice(len(r), size=n, p=w / w.sum())
    d = (p1[s] - p0[s]) / np.linalg.norm(p1[s] - p0[s], axis=1, keepdims=True)
    e1 = np.cross(d, rng.normal(size=(n, 3)))  # random direction perpendicular to the axis
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    off = e1 * (r[s] * np.sqrt(rng.uniform(size=n)))[:, None]  # uniform in the disc
    return p0[s] + rng.uniform(size=(n, 1)) * (p1[s] - p0[s]) + off, r[s]


def save_cloud(path, pts, radius):
    """Binary legacy VTK PolyData with one vertex cell per point and a `radius` array.

    The header line says SPACE=RAS, the tag otreg.io (like 3D Slicer) reads for the frame.
    """
    cloud = pv.PolyData(pts.astype(np.float32))  # PolyData(points) makes vertex cells
    cloud.point_data["radius"] = radius.astype(np.float32)
    writer = vtkPolyDataWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(cloud)
    writer.SetHeader("otreg synthetic lung vessels, mm, SPACE=RAS")
    writer.SetFileTypeToBinary()
    assert writer.Write() == 1, f"could not write {path}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="output folder (default: this script's folder, sample_data/)",
    )
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    p0, p1, r, parent = build_tree(rng)
    children = [[] for _ in r]
    for s, par in enumerate(parent):
        if par >= 0:
            children[par].append(s)
    bif = np.array([s for s in range(len(r)) if len(children[s]) >= 2])

    # The field must be a diffeomorphism of the lungs (no folding): check det(J).
    jac_lung, jac_box = min_jacobian()
    assert jac_lung > 0.2, f"motion folds: min Jacobian {jac_lung:.3f}"

    # Missing branches: small distal subtrees (<= 3 segments, r < 2 mm), disjoint
    # between phases, so each phase lacks some anatomy the other one has.
    size = np.array([len(subtree(s, children)) for s in range(len(r))])
    small = [s for s in range(len(r)) if r[s] < 2.0 and size[s] <= 3 and size[parent[s]] > 3]
    picks = rng.choice(small, size=2 * N_MISSING, replace=False)
    keep = {}
    for phase, roots in (("exhale", picks[:N_MISSING]), ("inhale", picks[N_MISSING:])):
        k = np.ones(len(r), dtype=bool)
        for s in roots:
            k[subtree(s, children)] = False
        keep[phase] = k

    # Landmarks: bifurcations whose segment and children are present in both phases.
    both = keep["exhale"] & keep["inhale"]
    ok = [s for s in bif if both[s] and all(both[c] for c in children[s])]
    lm_idx = np.sort(rng.choice(ok, size=N_LANDMARKS, replace=False))
    lm_ex = p1[lm_idx]
    lm_in = lm_ex + motion(lm_ex)

    # Two independent samplings of the same tree; inhale = motion(tree samples).
    clouds = {}
    for phase in ("exhale", "inhale"):
        pts, rad = sample(rng, p0, p1, r, keep[phase], N_POINTS)
        if phase == "inhale":
            pts = pts + motion(pts)
        pts = pts + rng.normal(0.0, NOISE_MM, size=pts.shape)  # independent sensor noise
        order = rng.permutation(N_POINTS)  # no ordering correspondence between phases
        clouds[phase] = pts[order], rad[order]
        save_cloud(args.out / f"{phase}_vessels.vtk", *clouds[phase])

    hdr = "{} landmarks: {} vessel bifurcations, x y z in mm, world RAS+, row i <-> row i"
    np.savetxt(
        args.out / "exhale_landmarks.txt",
        lm_ex,
        fmt="%.3f",
        header=hdr.format("exhale (source)", N_LANDMARKS),
    )
    np.savetxt(
        args.out / "inhale_landmarks.txt",
        lm_in,
        fmt="%.3f",
        header=hdr.format("inhale (target)", N_LANDMARKS),
    )

    disp = np.linalg.norm(lm_in - lm_ex, axis=1)
    nn = np.min(np.linalg.norm(lm_in[:, None] - clouds["inhale"][0][None], axis=2), axis=1)
    both_pts = np.concatenate([c[0] for c in clouds.values()])
    extent = np.round(both_pts.max(0) - both_pts.min(0)).astype(int).tolist()
    print(
        f"seed {args.seed}: tree {len(r)} segments, {len(bif)} bifurcations, "
        f"{2 * N_MISSING} distal branches dropped ({N_MISSING} per phase)"
    )
    print(
        f"points: exhale {len(clouds['exhale'][0])}, inhale {len(clouds['inhale'][0])}; "
        f"extent {extent} mm (x, y, z)"
    )
    print(
        f"landmarks: {N_LANDMARKS}, displacement mean {disp.mean():.1f} mm, "
        f"max {disp.max():.1f} mm, min {disp.min():.1f} mm"
    )
    print(
        f"inhale landmark -> inhale cloud NN distance: mean {nn.mean():.2f} mm, "
        f"max {nn.max():.2f} mm"
    )
    print(f"min Jacobian det: {jac_lung:.3f} in the lungs ({jac_box:.3f} over the bounding box)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
