"""Geometry of a synthetic lamella on a fine grid: vacuum, NMC particles, voids, cracks, electrolyte, interphase.

Everything is drawn on a square grid of ``spec.fine_pixel_nm`` covering the SEM field plus ``spec.margin_nm``
on each side. Fine pixel ``(i, j)`` (row, column) has its centre at ``x_nm = -margin + j * fine_pixel_nm``,
``y_nm = -margin + i * fine_pixel_nm`` in SEM-field coordinates (origin at the centre of SEM pixel (0, 0)).

Order of construction (each step only changes what the previous ones left):

1. lamella edge: an irregular vacuum strip along one side (class 0);
2. NMC particles: rounded random convex polygons, large first, rejection-placed with a minimum gap,
   plus touching pairs (pressed together, flat contact; distinct ids) and pairs across a narrow gap;
3. transverse cracks (class void) across some particles — a cracked particle keeps its one id;
4. voids: delamination crescents along part of the perimeter of most particles and a few free pores;
5. electrolyte: all that is left inside the lamella (class 3), with sub-resolution pores (material fraction);
6. interphase (class 2): a band on the electrolyte side of every NMC–electrolyte boundary, its thickness a
   smooth random (log-normal) function of the polar angle around each particle; bands of neighbouring
   particles simply overlap where a gap is narrow (truth keeps every particle's generated thickness).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.fft import next_fast_len
from scipy.spatial import ConvexHull

from .. import Class
from .fields import periodic_smooth_function, smooth_random_field
from .spec import LamellaSpec


@dataclass
class ParticleRecord:
    """Generation record of one particle (ids are final, 1..n)."""

    particle_id: int
    centre_yx: tuple[float, float]      # fine-grid (row, col) of the polar-angle origin
    bbox: tuple = None                  # (slice, slice) on the fine grid
    cracked: bool = False
    thickness_fn: object = None         # theta -> interphase thickness (nm), or None without interphase


@dataclass
class Microstructure:
    """The fine-grid geometry of one lamella.

    Attributes
    ----------
    classes : uint8 (ny, nx)
        Class codes 0–4.
    particles : int32 (ny, nx)
        Particle id (1..n) on NMC pixels, 0 elsewhere.
    material : float32 (ny, nx)
        Fraction of the lamella thickness filled with solid (1 in NMC, ~1 - porosity in electrolyte and
        interphase, 0 in voids and vacuum).
    pores : float32 (ny, nx)
        The unit random field behind the electrolyte's porosity (high = pore); the SEM shows its top values.
    thickness_100nm : float32 (ny, nx)
        Local lamella thickness in units of 100 nm.
    contact : uint8 (ny, nx)
        On NMC boundary pixels: 1 = contact with electrolyte, 2 = with void, 3 = other (particle, vacuum); 0 elsewhere.
    depth_electrolyte_nm : float32 (ny, nx)
        Inside each particle: distance to its nearest electrolyte-contact boundary (inf when none).
    interphase_thickness_nm : float32 (ny, nx)
        On electrolyte-contact boundary pixels: the generated interphase thickness there (0 elsewhere).
    records : list of ParticleRecord
    pixel_nm : float
    origin_nm : float
        Coordinate (x and y) of the centre of fine pixel (0, 0), = -margin.
    """

    classes: np.ndarray
    particles: np.ndarray
    material: np.ndarray
    pores: np.ndarray
    thickness_100nm: np.ndarray
    contact: np.ndarray
    depth_electrolyte_nm: np.ndarray
    interphase_thickness_nm: np.ndarray
    records: list
    pixel_nm: float
    origin_nm: float


# ----------------------------------------------------------------------------------------------------------
# particle shapes

def _particle_shape(rng: np.random.Generator, diameter_px: float) -> np.ndarray:
    """Boolean mask of one rounded convex faceted particle with equivalent diameter ~``diameter_px``."""
    n_vertices = int(rng.integers(6, 12))
    aspect = rng.uniform(1.0, 1.6)
    orient = rng.uniform(0, np.pi)
    angles = np.sort(rng.uniform(0, 2 * np.pi, n_vertices) * 0.35
                     + np.linspace(0, 2 * np.pi, n_vertices, endpoint=False) * 0.65)
    a, b = np.sqrt(aspect), 1.0 / np.sqrt(aspect)
    r = 1.0 / np.sqrt((np.cos(angles - orient) / a) ** 2 + (np.sin(angles - orient) / b) ** 2)
    r *= 1.0 + 0.08 * rng.standard_normal(n_vertices)
    pts = np.c_[r * np.cos(angles), r * np.sin(angles)]
    hull = pts[ConvexHull(pts).vertices]
    area = 0.5 * abs(np.dot(hull[:, 0], np.roll(hull[:, 1], 1)) - np.dot(hull[:, 1], np.roll(hull[:, 0], 1)))
    hull *= (diameter_px / 2.0) * np.sqrt(np.pi / area)
    half = int(np.ceil(np.abs(hull).max())) + 3
    # rounded corners: erode the polygon by r_round (inward-offset half-planes, exact for a convex
    # polygon), then dilate by r_round (distance transform) = a morphological opening with a disc
    r_round = rng.uniform(0.12, 0.3) * diameter_px / 2.0
    yy, xx = np.ogrid[-half:half + 1, -half:half + 1]
    eroded = np.ones((2 * half + 1, 2 * half + 1), bool)
    for (x0, y0), (x1, y1) in zip(hull, np.roll(hull, -1, axis=0)):
        ex, ey = x1 - x0, y1 - y0
        norm = np.hypot(ex, ey)
        # hull vertices are counter-clockwise: the inside is to the left of each edge
        signed_out = ((xx - x0) * ey - (yy - y0) * ex) / norm
        eroded &= signed_out <= -r_round
    return ndi.distance_transform_edt(~eroded) <= r_round


def _dilated(mask: np.ndarray, radius_px: float) -> tuple[np.ndarray, int]:
    """``mask`` dilated by ``radius_px`` (Euclidean), padded; returns (mask, pad)."""
    pad = int(np.ceil(radius_px)) + 1
    padded = np.pad(mask, pad)
    if radius_px <= 0:
        return padded, pad
    return ndi.distance_transform_edt(~padded) <= radius_px, pad


class _Canvas:
    """The particle-id grid during placement."""

    def __init__(self, shape):
        self.ids = np.zeros(shape, np.int32)
        self.discs: list[tuple[float, float, float]] = []   # (cy, cx, r_max) in px
        self.centres: dict[int, tuple[float, float, float]] = {}   # pid -> (cy, cx, r_max)

    def _window(self, mask, cy, cx):
        h, w = mask.shape
        y0, x0 = int(round(cy)) - h // 2, int(round(cx)) - w // 2
        ys, xs = max(y0, 0), max(x0, 0)
        ye, xe = min(y0 + h, self.ids.shape[0]), min(x0 + w, self.ids.shape[1])
        if ye <= ys or xe <= xs:
            return None
        return (slice(ys, ye), slice(xs, xe)), (slice(ys - y0, ye - y0), slice(xs - x0, xe - x0))

    def overlaps(self, mask, cy, cx, gap_px, ignore=(), grown=None):
        if grown is None:
            grown, pad = _dilated(mask, gap_px)
        win = self._window(grown, cy, cx)
        if win is None:
            return True
        (gs, ms) = win
        hit = self.ids[gs][grown[ms]]
        hit = hit[hit != 0]
        return bool(np.any(~np.isin(hit, list(ignore)))) if len(ignore) else bool(hit.size)

    def place(self, mask, cy, cx, pid):
        win = self._window(mask, cy, cx)
        gs, ms = win
        sub = self.ids[gs]
        sub[mask[ms] & (sub == 0)] = pid   # overlap (pressed contact) stays with the earlier particle
        self.discs.append((cy, cx, max(mask.shape) / 2.0))
        self.centres[pid] = (cy, cx, max(mask.shape) / 2.0)

    def visible_fraction(self, mask, cy, cx, field):
        win = self._window(mask, cy, cx)
        if win is None:
            return 0.0
        gs, ms = win
        return float((mask[ms] & field[gs]).sum()) / max(mask.sum(), 1)


def _place_particles(rng, spec: LamellaSpec, shape, field_mask):
    px = spec.fine_pixel_nm
    m = spec.margin_nm / px
    fw, fh = spec.field_width_nm / px, spec.field_height_nm / px
    canvas = _Canvas(shape)
    n = spec.n_particles
    lo, hi = spec.particle_diameter_nm
    d = spec.particle_diameter_median_nm * np.exp(0.35 * rng.standard_normal(n))
    target_area = spec.nmc_area_fraction * spec.field_width_nm * spec.field_height_nm
    d *= np.sqrt(target_area / np.sum(np.pi * d**2 / 4.0))
    d = np.sort(np.clip(d, lo, hi))[::-1] / px
    n_pairs = min(spec.n_touching_pairs + spec.n_narrow_gaps, n // 2)
    kinds = ["free"] * (n - n_pairs) + ["touch"] * min(spec.n_touching_pairs, n_pairs) \
        + ["gap"] * (n_pairs - min(spec.n_touching_pairs, n_pairs))
    # partners go in after the free particles; the smallest ones are the partners
    min_gap_px = 90.0 / px
    pid = 0
    for k, kind in enumerate(kinds):
        diam = d[k]
        placed = False
        for attempt in range(200):
            if attempt and attempt % 40 == 0:
                diam *= 0.9
            if kind == "free" or pid == 0:
                cy = rng.uniform(m - 0.2 * diam, m + fh + 0.2 * diam)
                cx = rng.uniform(m - 0.2 * diam, m + fw + 0.2 * diam)
                if _cheap_reject(canvas, cy, cx, diam):
                    continue
                mask = _particle_shape(rng, diam)
                if canvas.visible_fraction(mask, cy, cx, field_mask) < 0.5:
                    continue
                if canvas.overlaps(mask, cy, cx, min_gap_px):
                    continue
            else:
                mask = _particle_shape(rng, diam)
                partner = int(rng.integers(1, pid + 1))
                gap_px = 0.0 if kind == "touch" else rng.uniform(40.0, 160.0) / px
                press_px = 40.0 / px if kind == "touch" else 0.0
                pos = _slide_to(canvas, mask, partner, rng.uniform(0, 2 * np.pi), gap_px, press_px)
                if pos is None:
                    continue
                cy, cx = pos
                if canvas.visible_fraction(mask, cy, cx, field_mask) < 0.5:
                    continue
                if canvas.overlaps(mask, cy, cx, min_gap_px, ignore=(partner,)):
                    continue
                if kind == "gap" and canvas.overlaps(mask, cy, cx, max(gap_px - 1.0, 0.0)):
                    continue
            pid += 1
            canvas.place(mask, cy, cx, pid)
            placed = True
            break
        if not placed:
            continue
    return canvas


def _cheap_reject(canvas, cy, cx, diam):
    for (py, pxx, r) in canvas.discs:
        if np.hypot(cy - py, cx - pxx) < 0.55 * (diam / 2.0 + r):
            return True
    return False


def _slide_to(canvas, mask, partner, phi, gap_px, press_px):
    """Centre for ``mask`` on direction ``phi`` from ``partner`` at distance ``gap_px`` (or pressed in)."""
    py, pxx, r_partner = canvas.centres[partner]
    uy, ux = np.sin(phi), np.cos(phi)
    grown, _ = _dilated(mask, max(gap_px, 0.0) + 0.5)
    lo, hi = 0.0, (max(mask.shape) / 2.0 + r_partner) * 1.2
    for _ in range(14):
        mid = 0.5 * (lo + hi)
        if _hits(canvas, grown, py + mid * uy, pxx + mid * ux, partner):
            lo = mid
        else:
            hi = mid
    dist = hi - press_px
    return py + dist * uy, pxx + dist * ux


def _hits(canvas, grown, cy, cx, pid):
    win = canvas._window(grown, cy, cx)
    if win is None:
        return False
    gs, ms = win
    return bool(np.any(canvas.ids[gs][grown[ms]] == pid))


# ----------------------------------------------------------------------------------------------------------
# lamella edge, cracks, voids

def _vacuum_mask(rng, spec: LamellaSpec, shape) -> np.ndarray:
    """True outside the lamella: an irregular strip along ``spec.vacuum_side`` (and beyond it)."""
    px = spec.fine_pixel_nm
    ny, nx = shape
    along = nx if spec.vacuum_side in ("top", "bottom") else ny
    t = np.arange(along) * px
    prof = np.zeros(along)
    for k, amp in ((1, 0.25), (2, 0.15), (3, 0.1), (5, 0.06), (9, 0.03)):
        prof += amp * np.sin(2 * np.pi * k * t / (along * px) + rng.uniform(0, 2 * np.pi))
    width_px = spec.vacuum_width_nm / px * (1.0 + prof) + spec.margin_nm / px
    width_px += ndi.gaussian_filter1d(rng.standard_normal(along), 6) * 4.0   # FIB edge roughness
    idx = np.arange(ny if spec.vacuum_side in ("top", "bottom") else nx)
    if spec.vacuum_side == "left":
        return idx[None, :] < width_px[:, None]
    if spec.vacuum_side == "right":
        return idx[None, :] > nx - 1 - width_px[:, None]
    if spec.vacuum_side == "top":
        return idx[:, None] < width_px[None, :]
    return idx[:, None] > ny - 1 - width_px[None, :]


def _box(rec, pad, shape):
    """The particle's bounding box grown by ``pad`` px, clipped to the grid."""
    sy, sx = rec.bbox
    return (slice(max(sy.start - pad, 0), min(sy.stop + pad, shape[0])),
            slice(max(sx.start - pad, 0), min(sx.stop + pad, shape[1])))


def _crack(rng, ids, rec, px):
    """Void mask (within the particle's box) of a transverse crack across particle ``rec``."""
    box = rec.bbox
    sub = ids[box] == rec.particle_id
    ys, xs = np.nonzero(sub)
    cy, cx = ys.mean(), xs.mean()
    # transverse: across the particle's long axis
    cov = np.cov(np.c_[ys, xs].T)
    evals, evecs = np.linalg.eigh(cov)
    long_axis = evecs[:, 1]
    ang = np.arctan2(long_axis[0], long_axis[1]) + np.pi / 2 + rng.uniform(-0.5, 0.5)
    uy, ux = np.sin(ang), np.cos(ang)
    shift = rng.uniform(-0.25, 0.25) * np.sqrt(evals[1]) * 2
    cy, cx = cy + shift * long_axis[0], cx + shift * long_axis[1]
    yy, xx = np.mgrid[0:sub.shape[0], 0:sub.shape[1]]
    u = (yy - cy) * uy + (xx - cx) * ux          # along the crack
    v = -(yy - cy) * ux + (xx - cx) * uy         # across it
    span = np.abs(u[sub]).max() + 1
    wav = periodic_smooth_function(rng, 2 * np.pi * span * px, 250.0)
    u_grid = np.linspace(-span, span, 256)
    centre = np.interp(u, u_grid, 30.0 / px * wav(u_grid / span * np.pi))
    w0 = rng.uniform(20.0, 60.0) / px
    width = np.interp(u, u_grid, w0 * (1.0 + 0.25 * wav(u_grid / span * np.pi + 1.0)))
    partial = rng.uniform() < 0.25
    along_ok = (u < 0.45 * span) if partial else np.ones_like(sub)
    return sub & (np.abs(v - centre) <= np.maximum(width, 3.0) / 2.0) & along_ok


def _voids(rng, spec, ids, lamella, records, px):
    """Delamination crescents along particle perimeters and a few free pores (True = void)."""
    void = np.zeros(ids.shape, bool)
    wmax_nm = 520.0
    n_with = int(round(spec.void_particle_fraction * len(records)))
    chosen = set(rng.permutation(len(records))[:n_with].tolist())
    for i, rec in enumerate(records):
        if i not in chosen:
            continue
        box = _box(rec, int(wmax_nm / px) + 2, ids.shape)
        own = ids[box] == rec.particle_id
        if own.sum() < 50:
            continue
        dist = ndi.distance_transform_edt(~own) * px
        yy, xx = np.ogrid[box[0], box[1]]
        theta = np.arctan2(yy - rec.centre_yx[0], xx - rec.centre_yx[1])
        perim = 2 * np.pi * np.sqrt(own.sum() / np.pi) * px
        n_cres = 1 if rng.uniform() < 0.5 else 2
        for _ in range(n_cres):
            arc_nm = rng.uniform(400.0, 1500.0)
            half = min(arc_nm / perim * np.pi, 0.4 * np.pi)
            t0 = rng.uniform(-np.pi, np.pi)
            dth = (theta - t0 + np.pi) % (2 * np.pi) - np.pi
            inside = np.abs(dth) < half
            bump = np.where(inside, np.clip(np.cos(0.5 * np.pi * dth / half), 0, None) ** 0.6, 0.0)
            w = rng.uniform(120.0, 450.0)
            rough = 1.0 + 0.2 * np.sin(3 * dth / half * np.pi + rng.uniform(0, 6))
            void[box] |= (dist > 0) & (dist <= w * bump * rough) & (bump > 0.05)
    ny, nx = ids.shape
    for _ in range(spec.n_free_voids):
        cy, cx = rng.uniform(0, ny), rng.uniform(0, nx)
        r = rng.uniform(80.0, 400.0) / px
        half = int(2 * r) + 2
        ys0, ys1 = max(int(cy) - half, 0), min(int(cy) + half, ny)
        xs0, xs1 = max(int(cx) - half, 0), min(int(cx) + half, nx)
        yy, xx = np.mgrid[ys0:ys1, xs0:xs1]
        a = rng.uniform(0.6, 1.6)
        ang = rng.uniform(0, np.pi)
        u = ((yy - cy) * np.cos(ang) + (xx - cx) * np.sin(ang)) / a
        v = (-(yy - cy) * np.sin(ang) + (xx - cx) * np.cos(ang)) * a
        th = np.arctan2(v, u)
        rr = r * (1.0 + 0.15 * np.sin(3 * th + rng.uniform(0, 6)) + 0.1 * np.sin(5 * th + rng.uniform(0, 6)))
        void[ys0:ys1, xs0:xs1] |= np.hypot(u, v) <= rr
    return void & lamella & (ids == 0)


# ----------------------------------------------------------------------------------------------------------
# contacts and interphase

def _contacts(classes, ids):
    """Contact type on NMC boundary pixels: 1 electrolyte, 2 void (incl. cracks), 3 other (particle, vacuum).

    A boundary pixel is an NMC pixel with a 4-neighbour that is not the same particle. Its contact is the
    class of its 4-neighbours (electrolyte wins over void when it has both), or, failing a 4-neighbour of
    either, of its diagonal neighbours.
    """
    cross = ndi.generate_binary_structure(2, 1)
    square = ndi.generate_binary_structure(2, 2)
    nmc = ids > 0
    boundary = nmc & ~ndi.binary_erosion(nmc, structure=cross, border_value=1)
    other_id = (ndi.maximum_filter(ids, footprint=cross) != ids) | (ndi.minimum_filter(
        np.where(nmc, ids, np.iinfo(np.int32).max), footprint=cross) != ids)
    boundary |= nmc & other_id
    el = classes == Class.ELECTROLYTE
    vo = classes == Class.VOID
    el4, vo4 = ndi.binary_dilation(el, cross), ndi.binary_dilation(vo, cross)
    el8, vo8 = ndi.binary_dilation(el, square), ndi.binary_dilation(vo, square)
    contact = np.zeros(classes.shape, np.uint8)
    contact[boundary] = 3
    diag_void = vo8 & ~el4 & ~vo4 & ~el8
    contact[boundary & (vo4 | diag_void)] = 2
    contact[boundary & (el4 | (el8 & ~vo4))] = 1
    return contact


def _interphase(rng, spec, classes, ids, contact, records, px):
    """Interphase band (bool) and the generated thickness on electrolyte-contact boundary pixels."""
    thick = np.zeros(classes.shape, np.float32)
    band = np.zeros(classes.shape, bool)
    if spec.interphase_mean_nm <= 0:
        return band, thick
    m, s = spec.interphase_mean_nm, spec.interphase_sd_nm
    sig2 = np.log1p((s / m) ** 2)
    mu = np.log(m) - sig2 / 2
    sig_p = np.sqrt(spec.interphase_particle_share * sig2)
    sig_w = np.sqrt((1 - spec.interphase_particle_share) * sig2)
    for rec in records:
        u = rng.standard_normal()
        own0 = ids[rec.bbox] == rec.particle_id
        perim = max(np.count_nonzero(contact[rec.bbox][own0]) * px, 500.0)
        z = periodic_smooth_function(rng, perim, spec.interphase_corr_nm)
        mu_i, c = mu + sig_p * u, rec.centre_yx

        def fn(theta, mu_i=mu_i, z=z):
            return np.maximum(np.exp(mu_i + sig_w * z(theta)), 2.0 * px)

        rec.thickness_fn = fn
        th_grid = np.linspace(-np.pi, np.pi, 721)
        t_max = float(fn(th_grid).max()) + 2 * px
        box = _box(rec, int(t_max / px) + 2, ids.shape)
        own = ids[box] == rec.particle_id
        sub_boundary = (contact[box] > 0) & own
        sub_el = (contact[box] == 1) & own
        if not sub_el.any():
            continue
        yy, xx = np.nonzero(sub_el)
        theta = np.arctan2(yy + box[0].start - c[0], xx + box[1].start - c[1])
        tvals = np.zeros(sub_el.shape, np.float32)
        tvals[yy, xx] = fn(theta)
        thick[box][sub_el] = tvals[sub_el]
        dist, (iy, ix) = ndi.distance_transform_edt(~sub_boundary, return_indices=True)
        nearest_el = sub_el[iy, ix]
        t_near = tvals[iy, ix]
        grow = nearest_el & (dist * px - 0.5 * px <= t_near) & (classes[box] == Class.ELECTROLYTE)
        band[box] |= grow
    return band, thick


# ----------------------------------------------------------------------------------------------------------

def make_microstructure(spec: LamellaSpec, rng: np.random.Generator) -> Microstructure:
    """Generate the fine-grid geometry of one lamella (see the module docstring for the steps).

    Parameters
    ----------
    spec : LamellaSpec
    rng : numpy.random.Generator
        The only source of randomness.

    Returns
    -------
    Microstructure
    """
    px = spec.fine_pixel_nm
    m = spec.margin_nm
    # even sizes whose halves are fast FFT lengths (the imaging grid is 2 x 2 blocks of this grid)
    ny = 2 * next_fast_len(int(np.ceil((spec.field_height_nm + 2 * m) / px / 2)) + 1, real=True)
    nx = 2 * next_fast_len(int(np.ceil((spec.field_width_nm + 2 * m) / px / 2)) + 1, real=True)
    shape = (ny, nx)
    vacuum = _vacuum_mask(rng, spec, shape)
    lamella = ~vacuum
    field_mask = np.zeros(shape, bool)
    field_mask[int(m / px):int((m + spec.field_height_nm) / px), int(m / px):int((m + spec.field_width_nm) / px)] = True
    canvas = _place_particles(rng, spec, shape, field_mask & lamella)
    ids = canvas.ids
    ids[vacuum] = 0
    # keep one connected piece per particle (the lamella edge may cut off slivers); relabel 1..n
    final = np.zeros_like(ids)
    records = []
    objs = ndi.find_objects(ids)
    new_id = 0
    for old, sl in enumerate(objs, start=1):
        if sl is None:
            continue
        own = ids[sl] == old
        lab, nlab = ndi.label(own)
        if nlab > 1:
            sizes = ndi.sum(own, lab, range(1, nlab + 1))
            own = lab == (1 + int(np.argmax(sizes)))
        if own.sum() * px * px < 0.05e6 or not (own & field_mask[sl]).any():
            continue
        new_id += 1
        final[sl][own] = new_id
        ys, xs = np.nonzero(own)
        records.append(ParticleRecord(new_id, (ys.mean() + sl[0].start, xs.mean() + sl[1].start), bbox=sl))
    ids = final
    classes = np.where(lamella, Class.ELECTROLYTE, Class.OUTSIDE).astype(np.uint8)
    classes[ids > 0] = Class.NMC
    # cracks: in the largest particles visible in the field
    if spec.n_cracked > 0:
        areas = np.array([np.count_nonzero((ids[r.bbox] == r.particle_id) & field_mask[r.bbox]) for r in records])
        order = np.argsort(areas)[::-1]
        candidates = [records[i] for i in order if areas[i] * px * px > 0.6e6]
        for rec in candidates[: spec.n_cracked]:
            crack = _crack(rng, ids, rec, px)
            if crack.sum() == 0:
                continue
            ids[rec.bbox][crack] = 0
            classes[rec.bbox][crack] = Class.VOID
            rec.cracked = True
    void = _voids(rng, spec, ids, lamella, records, px)
    classes[void] = Class.VOID
    contact = _contacts(classes, ids)
    band, thick = _interphase(rng, spec, classes, ids, contact, records, px)
    classes[band] = Class.INTERPHASE
    # depth below electrolyte-contact surfaces, per particle
    depth = np.full(shape, np.inf, np.float32)
    for rec in records:
        own = ids[rec.bbox] == rec.particle_id
        el = (contact[rec.bbox] == 1) & own
        if not el.any():
            continue
        d = ndi.distance_transform_edt(~el) * px + 0.5 * px
        depth[rec.bbox][own] = d[own]
    # solid fraction through the lamella: the electrolyte's sub-resolution pores make the projected density
    # a continuous random field (mean 1 - porosity); the same field marks surface pores in the SEM
    pores = smooth_random_field(rng, shape, px, 15.0)
    density = 1.0 + 0.04 * smooth_random_field(rng, shape, px, 600.0)
    projected = np.clip(1.0 - spec.electrolyte_porosity * (1.0 + 0.9 * pores), 0.35, 1.0) * density
    material = np.zeros(shape, np.float32)
    porous = (classes == Class.ELECTROLYTE) | (classes == Class.INTERPHASE)
    material[porous] = projected[porous]
    material[classes == Class.NMC] = 1.0
    # lamella thickness: a gentle wedge plus slow undulation
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    ramp = ((xx - nx / 2) * np.cos(ang) + (yy - ny / 2) * np.sin(ang)) / max(nx, ny)
    thickness = spec.lamella_thickness_100nm * (1.0 + spec.lamella_thickness_gradient * ramp
                                                + 0.03 * smooth_random_field(rng, shape, px, 1500.0))
    thickness = np.where(lamella, thickness, 0.0).astype(np.float32)
    return Microstructure(classes=classes, particles=ids.astype(np.int32), material=material, pores=pores,
                          thickness_100nm=thickness, contact=contact, depth_electrolyte_nm=depth,
                          interphase_thickness_nm=thick, records=records, pixel_nm=px, origin_nm=-m)
