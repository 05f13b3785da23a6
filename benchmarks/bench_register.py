"""STXM → SEM registration of the example stacks against a plain SimpleITK set-up (issue 3).

Both methods get the same inputs: the OD stack preprocessed the ceimap way
(``segment.pipeline.preprocess_stack``: frame alignment, then OD), its pixel size, the SEM image and its
pixel size.

* ceimap: ``segment.register.register_stxm_to_sem(contrast_image(od), …)`` as ``process_lamella`` calls it.
* baseline: the textbook SimpleITK multimodal set-up — Mattes mutual information (50 bins, 20 % random
  sampling, fixed seed), ``Similarity2DTransform`` started by ``CenteredTransformInitializer`` (geometry
  centres), both images in nm (spacing = pixel size, so the scale starts right: "seeded from the pixel
  sizes"), regular-step gradient descent (initial step one STXM pixel, minimum step 0.01 px, 300
  iterations, scales from physical shift), three-level pyramid (shrink 4, 2, 1; smoothing 2, 1, 0 px),
  linear interpolation; fixed = the SEM at full resolution, moving = the summed OD image of the stack,
  and for Ni-L also the OD frame at 852 eV (the Ni L3 e_g peak, the highest-contrast single energy).
  ITK runs on one thread for both (ceimap pins it; so does the baseline).

A harder start is added for each Ni-L stack: the SEM cropped by a quarter at the bottom and the right, so
the STXM field is off the SEM centre by ~1 µm and partly outside it (true matrix unchanged).

Metric: the four outer corners of the STXM field (pixel-square corners) mapped with the found matrix and with
the true one, mean distance in nm on the SEM. The true matrix is for frame 0 of the raw stack; it is moved
to the aligned grid's reference (the median frame position) with ceimap's own frame-0 shift, the same for
both methods (see ``_common.reference_matrix``). Time: wall time of the registration call.
"""

from __future__ import annotations

import numpy as np

from _common import (EDGES, examples, load_example, log, preprocessed, reference_matrix, registration, row,
                     single_threaded_blas, timed)

BENCH = "register"
NI_PEAK_EV = 852.0
CROP_FRACTION = 0.25


def corner_error_nm(matrix: np.ndarray, true_matrix: np.ndarray, stxm_shape, sem_pixel_nm: float) -> float:
    """Mean distance (nm on the SEM) of the STXM field's four corners mapped by ``matrix`` vs the truth."""
    from ceimap.segment.register import transform_points

    ny, nx = stxm_shape
    corners = np.array([[-0.5, -0.5], [nx - 0.5, -0.5], [-0.5, ny - 0.5], [nx - 0.5, ny - 0.5]])
    d = transform_points(matrix, corners) - transform_points(true_matrix, corners)
    return float(np.mean(np.hypot(d[:, 0], d[:, 1])) * sem_pixel_nm)


def sitk_default(moving: np.ndarray, moving_px_nm: float, fixed: np.ndarray, fixed_px_nm: float,
                 seed: int = 1) -> np.ndarray:
    """Plain SimpleITK Mattes-MI similarity registration; returns the STXM px → SEM px matrix."""
    import SimpleITK as sitk

    from ceimap.segment.register import _itk_to_matrix

    def image(a, px):
        img = sitk.GetImageFromArray(np.ascontiguousarray(np.nan_to_num(a, nan=float(np.nanmedian(a))),
                                                          dtype=np.float32))
        img.SetSpacing((float(px), float(px)))
        return img

    f_img, m_img = image(fixed, fixed_px_nm), image(moving, moving_px_nm)
    init = sitk.CenteredTransformInitializer(f_img, m_img, sitk.Similarity2DTransform(),
                                             sitk.CenteredTransformInitializerFilter.GEOMETRY)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.2, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=float(moving_px_nm), minStep=0.01 * moving_px_nm,
                                                 numberOfIterations=300)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(init, inPlace=False)
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        out = reg.Execute(f_img, m_img)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    final = out.GetNthTransform(0) if hasattr(out, "GetNthTransform") else out
    try:
        final = final.Downcast()
    except AttributeError:
        pass
    # fixed = SEM: the fixed pixel is the SEM pixel
    return _itk_to_matrix(final, moving_px_nm, fixed_px_nm)


def _off_centre(case: str, od, m_true: np.ndarray, sem_img: np.ndarray, sem_px: float, pairs: dict) -> list:
    """The same registration with the SEM cropped by :data:`CROP_FRACTION` at the bottom and right: the
    STXM field is then off the SEM centre (and partly outside it), as when the SEM was taken wider or
    elsewhere. The true matrix is unchanged (the crop keeps the SEM origin)."""
    from ceimap.segment.register import contrast_image, register_stxm_to_sem

    ny, nx = sem_img.shape
    sem_c = sem_img[: int(round(ny * (1 - CROP_FRACTION))), : int(round(nx * (1 - CROP_FRACTION)))]
    case = f"{case}, SEM cropped {CROP_FRACTION:.0%} (off-centre)"
    with timed() as tc:
        m_c = register_stxm_to_sem(contrast_image(od), od.pixel_size_nm, sem_c, sem_px).matrix
    c_err = corner_error_nm(m_c, m_true, od.shape_yx, sem_px)
    base = "SimpleITK default (summed OD)"
    with timed() as tb:
        try:
            err = corner_error_nm(sitk_default(np.nansum(np.asarray(od.data, float), axis=0), od.pixel_size_nm,
                                               sem_c, sem_px), m_true, od.shape_yx, sem_px)
        except RuntimeError as exc:
            log(f"  {base}: failed ({str(exc).splitlines()[-1][:120]})")
            err = float("nan")
    log(f"{case}: ceimap {c_err:.1f} nm, {tc['s']:.1f} s; {base}: {err:.1f} nm, {tb['s']:.1f} s")
    pairs.setdefault(f"{base}, off-centre", []).append((c_err, err, tc["s"], tb["s"]))
    return [row(BENCH, case, "corner error", "nm", c_err, base, err),
            row(BENCH, case, "time", "s", tc["s"], base, tb["s"])]


def run(quick: bool = False) -> list[dict]:
    rows = []
    pairs: dict[str, list] = {}
    with single_threaded_blas():
        for name in examples(quick):
            lam, _ = load_example(name)
            sem_img, sem_px = np.asarray(lam.sem.image, float), float(lam.sem.pixel_size_nm)
            for edge in EDGES:
                case = f"{name} {edge}"
                od = preprocessed(name, edge)["od"]
                m_true = reference_matrix(name, edge)
                shape = od.shape_yx
                reg = registration(name, edge)
                c_err = corner_error_nm(reg["registration"].matrix, m_true, shape, sem_px)
                c_s = reg["s"]
                log(f"{case}: ceimap {c_err:.1f} nm, {c_s:.1f} s")
                data = np.asarray(od.data, float)
                moving = {"summed OD": np.nansum(data, axis=0)}
                if edge == "Ni-L":
                    k = int(np.argmin(np.abs(np.asarray(od.energies_ev) - NI_PEAK_EV)))
                    moving[f"OD at {od.energies_ev[k]:.1f} eV"] = data[k]
                for what, img in moving.items():
                    base = f"SimpleITK default ({what})"
                    with timed() as t:
                        try:
                            m = sitk_default(img, od.pixel_size_nm, sem_img, sem_px)
                        except RuntimeError as exc:
                            log(f"  {base}: failed ({str(exc).splitlines()[-1][:120]})")
                            m = None
                    err = float("nan") if m is None else corner_error_nm(m, m_true, shape, sem_px)
                    log(f"  {base}: {err:.1f} nm, {t['s']:.1f} s")
                    key = base if what == "summed OD" else "SimpleITK default (Ni-L, OD at 852 eV)"
                    pairs.setdefault(key, []).append((c_err, err, c_s, t["s"]))
                    rows.append(row(BENCH, case, "corner error", "nm", c_err, base, err))
                    rows.append(row(BENCH, case, "time", "s", c_s, base, t["s"]))
                if edge == "Ni-L":
                    rows += _off_centre(case, od, m_true, sem_img, sem_px, pairs)
    for base, vals in pairs.items():
        v = np.array(vals, float)
        case = f"mean of {len(v)} stacks"
        rows.append(row(BENCH, case, "corner error", "nm", v[:, 0].mean(), base, np.nanmean(v[:, 1])))
        rows.append(row(BENCH, case, "time", "s", v[:, 2].mean(), base, v[:, 3].mean()))
    return rows


if __name__ == "__main__":
    import sys

    from _common import format_table

    print(format_table(run(quick="--quick" in sys.argv)))
