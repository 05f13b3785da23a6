"""NMC particle instances on the SEM grid: split touching particles, keep cracked ones whole.

:func:`label_particles` turns the NMC class of a class map into particle ids:

1. thin dark gaps inside NMC (transverse cracks, up to ``crack_width_nm`` wide) are bridged, so a cracked
   particle is one object — only gaps whose pixels are void/outside are bridged, never electrolyte or
   interphase;
2. a Euclidean distance transform (in nm) of the bridged NMC gives one peak per particle core; peaks
   closer than the smallest particle radius are one peak (``peak_local_max``), and a watershed on the
   negative distance splits the mask;
3. neighbouring regions whose shared boundary (the "neck") is wide compared with the smaller region's
   inscribed radius (``saddle / peak > neck_ratio``) are merged again — unless their union is markedly
   less convex than either part (single-crystal particles are convex; two touching ones make a
   concave outline even across a wide contact): two touching particles meet at a narrow neck or a
   concave notch, one irregular particle has neither;
4. regions smaller than a disc of ``min_diameter_nm`` are merged into the neighbour they share the longest
   boundary with, or dropped;
5. ids are renumbered 1…n in raster order of the particle centroids (row, then column), so they are stable
   under re-runs.

:func:`match_particles` pairs predicted and true particles by intersection over union.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.morphology import disk
from skimage.segmentation import watershed

from . import Class

__all__ = ["label_particles", "match_particles", "relabel_raster_order"]


def relabel_raster_order(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 1…n by the raster order (row, then column) of their centroids.

    Parameters
    ----------
    labels : ndarray of int, shape (ny, nx)
        0 = background.

    Returns
    -------
    ndarray of uint32, same shape

    Examples
    --------
    >>> lab = np.array([[0, 5, 5], [0, 0, 0], [2, 0, 0]])
    >>> relabel_raster_order(lab)
    array([[0, 1, 1],
           [0, 0, 0],
           [2, 0, 0]], dtype=uint32)
    """
    labels = np.asarray(labels)
    ids = np.unique(labels)
    ids = ids[ids > 0]
    out = np.zeros(labels.shape, dtype=np.uint32)
    if ids.size == 0:
        return out
    cents = np.array(ndimage.center_of_mass(np.ones(labels.shape), labels, ids))
    order = np.lexsort((cents[:, 1], np.round(cents[:, 0], 6)))
    lut = np.zeros(int(labels.max()) + 1, dtype=np.uint32)
    lut[ids[order]] = np.arange(1, ids.size + 1, dtype=np.uint32)
    out[:] = lut[labels]
    return out


def _neighbour_pairs(labels: np.ndarray, value: np.ndarray | None = None):
    """Pairs of 4-adjacent differing non-zero labels, with the boundary length and max of min(value)."""
    a_list, b_list, v_list = [], [], []
    for axis in (0, 1):
        sl1 = [slice(None)] * 2
        sl2 = [slice(None)] * 2
        sl1[axis] = slice(None, -1)
        sl2[axis] = slice(1, None)
        p, q = labels[tuple(sl1)], labels[tuple(sl2)]
        m = (p != q) & (p > 0) & (q > 0)
        a = np.minimum(p[m], q[m])
        b = np.maximum(p[m], q[m])
        a_list.append(a)
        b_list.append(b)
        if value is not None:
            v_list.append(np.minimum(value[tuple(sl1)][m], value[tuple(sl2)][m]))
    a = np.concatenate(a_list)
    b = np.concatenate(b_list)
    if a.size == 0:
        return pd.DataFrame(columns=["a", "b", "length", "saddle"])
    df = pd.DataFrame({"a": a, "b": b, "v": np.concatenate(v_list) if value is not None else 0.0})
    g = df.groupby(["a", "b"])["v"]
    out = pd.DataFrame({"length": g.size(), "saddle": g.max()}).reset_index()
    return out


def _solidity(mask: np.ndarray) -> float:
    """Area of a mask over the area of its convex hull (1 for a convex shape)."""
    from skimage.morphology import convex_hull_image

    sl = ndimage.find_objects(mask.astype(np.uint8))[0]
    crop = mask[sl]
    return float(crop.sum() / max(convex_hull_image(crop).sum(), 1))


def _union_find_merge(labels: np.ndarray, pairs) -> np.ndarray:
    parent = np.arange(int(labels.max()) + 1)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(parent.size)])
    return roots[labels]


def label_particles(classes: np.ndarray, sem_image: np.ndarray | None, pixel_size_nm: float, *,
                    min_diameter_nm: float = 150.0, min_particle_diameter_nm: float = 500.0,
                    crack_width_nm: float = 60.0, neck_ratio: float = 0.7,
                    concavity: float = 0.05) -> np.ndarray:
    """Label NMC particles (class 1) on the SEM grid.

    Parameters
    ----------
    classes : ndarray of uint8, shape (ny, nx)
        Class map (0 outside, 1 NMC, 2 interphase, 3 electrolyte, 4 void).
    sem_image : ndarray, shape (ny, nx), or None
        The SEM image. Not needed by the current geometric criteria (accepted so that SEM-edge refinements
        keep the signature); may be None.
    pixel_size_nm : float
        SEM pixel size in nm.
    min_diameter_nm : float
        Smallest object kept as a particle, as the diameter of a disc of equal area (default 150 nm, three
        times the ~50 nm STXM resolution: below that no chemistry can be measured on it). Smaller pieces
        are merged into the neighbouring particle they share the longest boundary with, or dropped.
    min_particle_diameter_nm : float
        Smallest particle size expected (single-crystal NMC: 0.5–3 µm). Distance-transform peaks closer
        than half of it belong to one particle.
    crack_width_nm : float
        Widest dark gap (void / outside pixels) bridged inside a particle (transverse cracks: 20–60 nm);
        thin void pieces (vanishing under an opening with a disc 1.5 × this across) whose rim is at least
        60 % NMC are cracks and are bridged too.
    neck_ratio : float
        Two neighbouring regions are one particle when the distance-transform value at their widest shared
        boundary point exceeds ``neck_ratio`` × the smaller region's peak (inscribed radius) — and
        joining them keeps the shape convex.
    concavity : float
        Single-crystal particles are convex: two neighbouring regions whose union's solidity (area over
        convex-hull area) is lower than the smaller of their own solidities by more than this are two
        touching particles, however wide the contact.

    Returns
    -------
    ndarray of uint32, shape (ny, nx)
        Particle ids 1…n in centroid raster order, 0 where not NMC.

    Examples
    --------
    >>> yy, xx = np.mgrid[:120, :200]
    >>> two = ((yy - 60) ** 2 + (xx - 55) ** 2 < 45 ** 2) | ((yy - 60) ** 2 + (xx - 143) ** 2 < 45 ** 2)
    >>> int(label_particles(two.astype(np.uint8), None, 10.0).max())
    2
    """
    classes = np.asarray(classes)
    nmc = classes == Class.NMC
    px = float(pixel_size_nm)
    if not nmc.any():
        return np.zeros(classes.shape, dtype=np.uint32)

    # 1. bridge thin dark gaps (cracks) inside NMC
    r_crack = max(int(round(crack_width_nm / 2.0 / px)), 1)
    closed = ndimage.binary_closing(np.pad(nmc, r_crack + 1), structure=disk(r_crack))
    closed = closed[r_crack + 1:-r_crack - 1, r_crack + 1:-r_crack - 1]
    dark = (classes == Class.VOID) | (classes == Class.OUTSIDE)
    solid = nmc | (closed & dark)
    # whole cracks: thin void pieces (vanishing under an opening with a disc 1.5 × crack_width_nm across)
    # whose rim is mostly NMC — also where a crack runs into a wider void at the particle surface
    void = classes == Class.VOID
    if void.any():
        r_open = max(int(round(0.75 * crack_width_nm / px)), 1)
        opened = ndimage.binary_opening(np.pad(void, r_open + 1), structure=disk(r_open))
        thin = void & ~opened[r_open + 1:-r_open - 1, r_open + 1:-r_open - 1]
        thin_lab, n_thin = ndimage.label(thin)
        if n_thin:
            rim = ndimage.binary_dilation(thin) & ~thin
            near_lab = ndimage.grey_dilation(thin_lab, size=3)
            rim_total = np.bincount(near_lab[rim], minlength=n_thin + 1)[1:]
            rim_nmc = np.bincount(near_lab[rim & nmc], minlength=n_thin + 1)[1:]
            crack_ids = np.flatnonzero(rim_nmc >= 0.6 * np.maximum(rim_total, 1)) + 1
            solid |= np.isin(thin_lab, crack_ids)

    # 2. distance transform and watershed from well-separated peaks
    dist_nm = ndimage.distance_transform_edt(solid) * px
    min_r_px = max(int(round(min_particle_diameter_nm / 2.0 / px)), 1)
    comp, _ = ndimage.label(solid)
    peaks = peak_local_max(dist_nm, min_distance=min_r_px, labels=comp, exclude_border=False,
                           threshold_abs=min_diameter_nm / 2.0)
    markers = np.zeros(classes.shape, dtype=np.int64)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # components without a peak (small or thin) get one marker at their distance maximum
    have = np.unique(comp[markers > 0])
    missing = np.setdiff1d(np.arange(1, comp.max() + 1), have)
    if missing.size:
        pos = ndimage.maximum_position(dist_nm, comp, missing)
        for k, p in enumerate(pos, start=len(peaks) + 1):
            markers[p] = k
    regions = watershed(-dist_nm, markers, mask=solid)

    # 3. merge regions joined by a wide neck
    peak_val = ndimage.maximum(dist_nm, regions, np.arange(regions.max() + 1))
    peak_val = np.asarray(peak_val, dtype=float)
    pairs = _neighbour_pairs(regions, dist_nm)
    if len(pairs):
        smaller_peak = np.minimum(peak_val[pairs["a"].to_numpy()], peak_val[pairs["b"].to_numpy()])
        wide = pairs["saddle"].to_numpy() > neck_ratio * smaller_peak
        # single-crystal particles are convex: two regions are one particle only when joining them keeps
        # the shape convex (the union loses at most ``concavity`` of its convex hull more than the parts)
        for k in np.flatnonzero(wide):
            a, b = int(pairs["a"].iloc[k]), int(pairs["b"].iloc[k])
            sol_a, sol_b, sol_ab = (_solidity(regions == a), _solidity(regions == b),
                                    _solidity((regions == a) | (regions == b)))
            if sol_ab < min(sol_a, sol_b) - concavity:
                wide[k] = False
        regions = _union_find_merge(regions, pairs.loc[wide, ["a", "b"]].to_numpy())

    # back to NMC pixels only (bridged crack pixels are not NMC)
    regions = np.where(nmc, regions, 0)

    # 4. small pieces: merge into the longest-sharing neighbour, else drop
    min_area_px = np.pi * (min_diameter_nm / 2.0) ** 2 / px ** 2
    for _ in range(3):
        ids, areas = np.unique(regions[regions > 0], return_counts=True)
        small = set(ids[areas < min_area_px].tolist())
        if not small:
            break
        pairs = _neighbour_pairs(regions)
        merges = []
        for sid in small:
            touch = pairs[(pairs["a"] == sid) | (pairs["b"] == sid)]
            touch = touch[~(touch["a"].isin(small) & touch["b"].isin(small))]
            if len(touch):
                best = touch.sort_values("length", ascending=False).iloc[0]
                merges.append((int(best["a"]), int(best["b"])))
        if merges:
            regions = _union_find_merge(regions, merges)
        ids, areas = np.unique(regions[regions > 0], return_counts=True)
        tiny = ids[areas < min_area_px]
        if not merges:
            regions[np.isin(regions, tiny)] = 0
            break
    ids, areas = np.unique(regions[regions > 0], return_counts=True)
    regions[np.isin(regions, ids[areas < min_area_px])] = 0
    return relabel_raster_order(regions)


def match_particles(pred: np.ndarray, truth: np.ndarray, *, iou_threshold: float = 0.5) -> pd.DataFrame:
    """Match predicted to true particles by intersection over union (IoU).

    Each true particle is paired with the predicted particle of highest IoU; predicted particles that are
    nobody's best match are listed with ``truth_id`` 0. With ``iou_threshold ≥ 0.5`` a match is unique.

    Parameters
    ----------
    pred, truth : ndarray of int, shape (ny, nx)
        Particle id maps (0 = none).
    iou_threshold : float
        ``matched`` is ``iou ≥ iou_threshold``.

    Returns
    -------
    DataFrame
        Columns ``truth_id, pred_id, iou, truth_area_px, pred_area_px, intersection_px, matched``.

    Examples
    --------
    >>> t = np.array([[1, 1, 0, 2, 2]])
    >>> p = np.array([[3, 3, 3, 0, 4]])
    >>> match_particles(p, t)[["truth_id", "pred_id", "iou"]].round(3).to_numpy().tolist()
    [[1.0, 3.0, 0.667], [2.0, 4.0, 0.5]]
    """
    pred = np.asarray(pred).astype(np.int64).ravel()
    truth = np.asarray(truth).astype(np.int64).ravel()
    t_ids, t_area = np.unique(truth[truth > 0], return_counts=True)
    p_ids, p_area = np.unique(pred[pred > 0], return_counts=True)
    t_area_of = dict(zip(t_ids.tolist(), t_area.tolist()))
    p_area_of = dict(zip(p_ids.tolist(), p_area.tolist()))
    both = (truth > 0) & (pred > 0)
    pairs, inter = np.unique(np.stack([truth[both], pred[both]]), axis=1, return_counts=True)
    best: dict[int, tuple[int, float, int]] = {}
    for (t, p), n in zip(pairs.T.tolist(), inter.tolist()):
        iou = n / (t_area_of[t] + p_area_of[p] - n)
        if t not in best or iou > best[t][1]:
            best[t] = (p, iou, n)
    rows = []
    used = set()
    for t in t_ids.tolist():
        p, iou, n = best.get(t, (0, 0.0, 0))
        used.add(p)
        rows.append((t, p, iou, t_area_of[t], p_area_of.get(p, 0), n))
    for p in p_ids.tolist():
        if p not in used:
            rows.append((0, p, 0.0, 0, p_area_of[p], 0))
    df = pd.DataFrame(rows, columns=["truth_id", "pred_id", "iou", "truth_area_px", "pred_area_px",
                                     "intersection_px"])
    df["matched"] = (df["iou"] >= iou_threshold) & (df["truth_id"] > 0)
    return df
