"""Calibration of ceimap's statistics by simulation: false-positive rate, power, bimodality false alarms.

What is measured
----------------
* **False-positive rate** at α = 0.05 of the electrolyte- vs void-adjacent surface test over *null*
  lamellae (``make_lamella(condition, seed, null=True)``: no Ni reduction at the NMC surface in contact with
  electrolyte; the interphase keeps its own reduced Ni), for ceimap's primary test (the one the summary reports:
  paired t on per-particle band means, :func:`ceimap.stats.inference.surface_electrolyte_vs_void`), beside the naive
  pixel-level Welch t test (:func:`ceimap.stats.inference.naive_pixel_test`: what a hurried analysis would publish)
  and the secondary pixel-level mixed model (:func:`ceimap.stats.inference.pixel_mixed_model`). Each rate has a
  Wilson 95 % confidence interval.
* **Power** of the primary test at the paper's effect: the same conditions without ``null``. The paper states
  only that the difference is significant with a two-tailed p < 0.01 (its Figure S6); the generator's presets
  encode that effect as a per-particle e_g/t_2g decrease of 0.30 ± 0.05 at the contact that decays into the
  particle as ``erfc(depth / 50–100 nm)`` (:mod:`ceimap.segment.synthetic.conditions`).
* The same two rates with the surface bands started at fixed depths — the 1 % contamination distance
  2.326 σ_eff (the rule's conservative fallback) and the edge itself — and with the start derived from the
  bias of the band's shallowest pixels instead of the band mean's (``start_criterion="pixel"``, the
  session-3 rule), beside ceimap's default, the start derived from each lamella
  (:func:`ceimap.stats.regions.surface_start_from_data`: the smallest depth where the bias the probe's view of the
  interphase can put on the paired difference is ≤ k·SE). Next to electrolyte the probe also sees the
  interphase, whose Ni is reduced even in a null lamella, so bands too close to the edge differ without any
  NMC surface effect: the null rows are the check that the rule lets no contamination in.
* **Bimodality rule** (:func:`ceimap.stats.distributions.bimodality`): false-alarm rate on skewed *unimodal*
  per-particle samples (log-normal and gamma, 10–20 values like our lamellae, ≥ 200 draws each) and power on
  clearly bimodal samples, beside the rule a hurried analysis uses (a 2-component Gaussian mixture preferred by
  BIC, scikit-learn).

The measurement chain is that of ceimap *except the segmentation*: the truth class and particle maps of each
lamella are used (a perfect segmentation) with the e_g/t_2g map measured from its simulated Ni L-edge count
stack — the stack shifted back by the truth drift (:func:`ceimap.segment.align.apply_shifts`), converted to optical
density (:func:`ceimap.segment.stack.optical_density`), fitted per pixel (:func:`ceimap.segment.spectra.egt2g_map`) and
placed on the SEM grid with the truth registration matrix. So the calibration is of the statistics (regions,
per-particle means, tests), not of segmentation or registration errors. The S L-edge stack is not simulated
(it does not enter these tests; the Ni-L stack comes from its own random stream, so it is the same either way).

Seeds 20000 + k (k = 0 … n − 1; distinct from the shipped examples), conditions cycled over the two cycled
presets; 100 null lamellae (so that a rate near 0.05 is measured to about ±0.04, Wilson 95 %) and 40 with the
paper's effect, numbers fixed before running, whatever the outcome. Lamellae run in a process pool of 2 (the
machine is shared). ``python3 benchmarks/bench_calibration.py --cache DIR`` keeps the simulated lamellae in
``DIR/calibration`` (the simulation is most of the cost; a change of the statistics then re-runs in minutes).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

import _common
from _common import log, row

CONDITIONS = ("cycled_4p25v", "cycled_4p7v")
ALPHA = 0.05
SEED0 = 20000
N_NULL_LAMELLAE = 100    # null arm: fixed before running (a 0.05 rate is then known to about ±0.04, Wilson)
N_EFFECT_LAMELLAE = 40   # effect arm (power)
N_LAMELLAE_QUICK = 4     # per arm with --quick
N_DRAWS = 400            # bimodality draws per distribution
N_DRAWS_QUICK = 40
N_PARTICLES = (10, 20)   # per-particle sample sizes of the bimodality draws (inclusive range)
LAMELLAE_JSON = None     # when set (``--lamellae FILE``), every lamella's tests are written there


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / n``."""
    from scipy import stats

    if n == 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _worker_init():
    # one BLAS thread per worker: two workers on a shared two-core machine
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except ImportError:  # pragma: no cover
        pass


def measured_lamella(condition: str, seed: int, null: bool, cache_dir=None) -> dict:
    """Simulate one lamella (Ni-L only) and measure its e_g/t_2g map through ceimap's spectral chain.

    With ``cache_dir`` (``run.py --cache DIR`` gives ``DIR/calibration``) the result is kept there
    (``<condition>_<seed>_<null|effect>.npz``) and reused: re-analysing the same lamellae after a change of
    the statistics then takes a few seconds per lamella.

    Returns
    -------
    dict
        ``classes, particles`` (truth, SEM grid), ``matrix`` (truth Ni-L → SEM), ``psf_fwhm_nm``,
        ``sem_pixel_nm``, ``stxm_pixel_nm``, ``ratio, sigma, valid`` (measured e_g/t_2g map, STXM grid),
        ``amplitude_t2g, amplitude_eg`` (fitted peak heights, everywhere).
    """
    path = None
    if cache_dir:
        path = os.path.join(str(cache_dir), f"{condition}_{seed}_{'null' if null else 'effect'}.npz")
        if os.path.exists(path):
            with np.load(path, allow_pickle=False) as z:
                return {k: (z[k].item() if z[k].ndim == 0 else z[k]) for k in z.files}
    from ceimap.segment.align import apply_shifts
    from ceimap.segment.spectra import egt2g_map
    from ceimap.segment.stack import optical_density
    from ceimap.segment.synthetic import make_lamella, make_spec

    spec = make_spec(condition, seed, null=null)
    spec = replace(spec, edges=tuple(e for e in spec.edges if e.edge == "Ni-L"))
    lam = make_lamella(spec)
    tr = lam.truth["transforms"]["Ni-L"]
    od, _ = optical_density(apply_shifts(lam.stacks["Ni-L"], np.asarray(tr["drift_px"], float)))
    eg = egt2g_map(od)
    out = {"classes": lam.truth["classes"], "particles": lam.truth["particles"],
           "matrix": np.asarray(tr["matrix"], float), "psf_fwhm_nm": float(tr["psf_fwhm_nm"]),
           "sem_pixel_nm": float(lam.spec.sem_pixel_nm), "stxm_pixel_nm": float(od.pixel_size_nm),
           "ratio": eg.ratio, "sigma": eg.sigma, "valid": eg.valid,
           "amplitude_t2g": eg.amplitude_t2g, "amplitude_eg": eg.amplitude_eg}
    if path:
        os.makedirs(str(cache_dir), exist_ok=True)
        np.savez_compressed(path + ".part.npz", **out)
        os.replace(path + ".part.npz", path)
    return out


def surface_tests(lam: dict, surface_offset_nm: float | None = None, mixed_model: bool = True,
                  start_criterion: str = "band_mean") -> dict:
    """The electrolyte-vs-void tests of ceimap on a perfect segmentation (truth classes and particles): the
    primary particle-level test with its Wilcoxon companion, the naive pixel test, and (``mixed_model``) the
    secondary pixel mixed model."""
    from ceimap.stats.inference import naive_pixel_test, pixel_mixed_model, surface_electrolyte_vs_void
    from ceimap.stats.regions import contact_classes, pixel_table, stxm_regions
    from ceimap.stats.tables import particle_table

    classes, particles, sem_px = lam["classes"], lam["particles"], lam["sem_pixel_nm"]
    ni_map = None
    if "amplitude_t2g" in lam:
        ni_map = {"egt2g": lam["ratio"], "egt2g_sigma": lam["sigma"], "egt2g_valid": lam["valid"],
                  "amplitude_t2g": lam["amplitude_t2g"], "amplitude_eg": lam["amplitude_eg"]}
    maps = stxm_regions(classes, particles, sem_px, lam["matrix"], lam["ratio"].shape, lam["stxm_pixel_nm"],
                        lam["psf_fwhm_nm"], surface_offset_nm=surface_offset_nm, ni_map=ni_map,
                        start_criterion=start_criterion)
    pixels = pixel_table(maps, lam["ratio"], lam["sigma"], lam["valid"])
    contacts = contact_classes(classes, particles, sem_px, maps.parameters["contamination_nm"])
    table = particle_table(contacts, particles, sem_px, pixels)
    primary = surface_electrolyte_vs_void(table)
    wil = primary.get("wilcoxon") or {}
    naive = naive_pixel_test(pixels)
    mixed = pixel_mixed_model(pixels) if mixed_model else {"p_value": np.nan}
    return {"p_primary": primary["p_value"], "effect": primary["effect"], "method": primary["method"],
            "n_pairs": primary["n_pairs"], "n_units": primary["n_units"],
            "p_wilcoxon": wil.get("p_value", np.nan), "p_naive": naive["p_value"], "p_mixed": mixed["p_value"],
            "offset_nm": maps.parameters["surface_offset_nm"], "sigma_eff_nm": maps.parameters["sigma_eff_nm"],
            "contamination_nm": maps.parameters["contamination_nm"],
            "rule": maps.parameters["surface_offset_rule"].get("rule")}


def one_lamella(job: tuple) -> dict:
    """All tests of one simulated lamella: default regions (bands from the depth derived from the lamella,
    :func:`ceimap.stats.regions.surface_start_from_data`), and bands from fixed depths: the 1 % contamination
    distance 2.326 σ_eff (the rule's fallback) and the NMC edge; and the start derived from the bias of the
    band's shallowest pixels (``start_criterion="pixel"``, the session-3 rule)."""
    condition, seed, null, cache_dir = job
    t0 = time.perf_counter()
    lam = measured_lamella(condition, seed, null, cache_dir)
    out = {"condition": condition, "seed": seed, "null": null,
           "n_particles": int(len(np.unique(lam["particles"][lam["particles"] > 0])))}
    default = surface_tests(lam)
    out["default"] = default
    sigma = default["sigma_eff_nm"]
    out["derived_pixel"] = surface_tests(lam, mixed_model=False, start_criterion="pixel")
    out["offset_1pct"] = surface_tests(lam, surface_offset_nm=2.326 * sigma, mixed_model=False)
    out["offset_0"] = surface_tests(lam, surface_offset_nm=0.0, mixed_model=False)
    out["seconds"] = time.perf_counter() - t0
    return out


def simulate_lamellae(n: int, null: bool, workers: int = 2) -> list[dict]:
    """Run :func:`one_lamella` over ``n`` seeds (conditions cycled) in a process pool."""
    cache_dir = None if _common.CACHE_DIR is None else Path(_common.CACHE_DIR) / "calibration"
    jobs = [(CONDITIONS[k % len(CONDITIONS)], SEED0 + k, null, cache_dir) for k in range(n)]
    results = []
    if workers <= 1:
        for job in jobs:
            results.append(one_lamella(job))
            log(f"  {'null' if null else 'effect'} {len(results)}/{n}")
        return results
    # spawn: no fork of a parent that may hold BLAS threads
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                             initializer=_worker_init) as pool:
        for res in pool.map(one_lamella, jobs):
            results.append(res)
            d = res["default"]
            log(f"  {'null' if null else 'effect'} {len(results)}/{n} {res['condition']} seed {res['seed']}: "
                f"paired p {d['p_primary']:.3g} (n {d['n_pairs']}), naive p {d['p_naive']:.2g}, "
                f"mixed p {d['p_mixed']:.2g} [{res['seconds']:.0f} s]")
    return results


def rejection_rate(results: list[dict], variant: str, key: str,
                   alpha: float = ALPHA) -> tuple[float, int, int, float, float]:
    """Fraction of lamellae with ``p < alpha`` (an undefined p counts as no rejection), k, n and Wilson CI."""
    p = np.array([r[variant][key] for r in results], float)
    k = int(np.sum(np.nan_to_num(p, nan=1.0) < alpha))
    lo, hi = wilson_interval(k, p.size)
    return k / p.size, k, p.size, lo, hi


def _ci(lo, hi):
    return f"[{lo:.2f}, {hi:.2f}]"


def _rate_row(metric, case, results, variant, key, base_key, better, alpha=ALPHA):
    r, k, n, lo, hi = rejection_rate(results, variant, key, alpha)
    rb, kb, nb, lob, hib = rejection_rate(results, variant, base_key, alpha)
    out = row("calibration", f"{case}; {k}/{n} {_ci(lo, hi)} vs naive {kb}/{nb} {_ci(lob, hib)}", metric,
              "fraction", r, "naive pixel Welch t", rb, better=better)
    out.update(ci_low=lo, ci_high=hi, baseline_ci_low=lob, baseline_ci_high=hib, n=n)
    return out


def bic_prefers_two(x: np.ndarray) -> bool:
    """The hurried rule: a 2-component Gaussian mixture has the lower BIC (scikit-learn)."""
    from sklearn.mixture import GaussianMixture

    x = np.asarray(x, float).reshape(-1, 1)
    bic = [GaussianMixture(k, n_init=3, random_state=0).fit(x).bic(x) for k in (1, 2)]
    return bool(bic[1] < bic[0])


def bimodality_samples(kind: str, n_draws: int, seed: int) -> list[np.ndarray]:
    """Per-particle-like samples (10–20 values) of a distribution family.

    ``lognormal``: exp(N(0, 0.5²)) (skewness 1.75); ``gamma``: shape 2 (skewness 1.41); ``normal``;
    ``bimodal_4sd`` / ``bimodal_6sd``: equal mixture of two normals of sd 1 whose means differ by 4 / 6 sd
    (the 4.7 V preset's two groups differ by ≈ 9 of their sds). Location and scale are irrelevant to the rule.
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_draws):
        n = int(rng.integers(N_PARTICLES[0], N_PARTICLES[1] + 1))
        if kind == "lognormal":
            x = rng.lognormal(0.0, 0.5, n)
        elif kind == "gamma":
            x = rng.gamma(2.0, 1.0, n)
        elif kind == "normal":
            x = rng.normal(0.0, 1.0, n)
        elif kind.startswith("bimodal_"):
            sep = float(kind.split("_")[1].rstrip("sd"))
            g = rng.permutation(np.arange(n) % 2)
            x = rng.normal(0.0, 1.0, n) + sep * g
        else:
            raise ValueError(kind)
        out.append(x)
    return out


def bimodality_rates(kind: str, n_draws: int, seed: int) -> dict:
    from ceimap.stats.distributions import bimodality

    samples = bimodality_samples(kind, n_draws, seed)
    calls = np.array([bool(bimodality(x, n_boot=199, seed=seed + i)["bimodal"]) for i, x in enumerate(samples)])
    bic = np.array([bic_prefers_two(x) for x in samples])
    return {"kind": kind, "n": len(samples), "k": int(calls.sum()), "k_bic": int(bic.sum())}


def _bimodality_row(res: dict, metric: str, better: str) -> dict:
    n, k, kb = res["n"], res["k"], res["k_bic"]
    lo, hi = wilson_interval(k, n)
    lob, hib = wilson_interval(kb, n)
    out = row("calibration", f"{res['kind']}, n 10–20; {k}/{n} {_ci(lo, hi)} vs BIC {kb}/{n} {_ci(lob, hib)}",
              metric, "fraction", k / n, "GMM 1 vs 2 by BIC", kb / n, better=better)
    out.update(ci_low=lo, ci_high=hi, baseline_ci_low=lob, baseline_ci_high=hib, n=n)
    return out


def run(quick: bool = False) -> list[dict]:
    n_lam = N_LAMELLAE_QUICK if quick else N_NULL_LAMELLAE
    n_eff = N_LAMELLAE_QUICK if quick else N_EFFECT_LAMELLAE
    n_draws = N_DRAWS_QUICK if quick else N_DRAWS
    workers = int(os.environ.get("CEIMAP_BENCH_WORKERS", "2"))
    rows = []
    t0 = time.perf_counter()
    log(f"calibration: {n_lam} null lamellae ({', '.join(CONDITIONS)} cycled), perfect segmentation")
    nulls = simulate_lamellae(n_lam, null=True, workers=workers)
    log(f"calibration: {n_eff} lamellae with the paper's effect")
    effects = simulate_lamellae(n_eff, null=False, workers=workers)
    t_lamellae = time.perf_counter() - t0
    if LAMELLAE_JSON is not None:
        import json

        Path(LAMELLAE_JSON).write_text(json.dumps({"nulls": nulls, "effects": effects}, default=float))

    rows.append(_rate_row("false-positive rate, primary (paired t on particle means)", f"{n_lam} null lamellae",
                          nulls, "default", "p_primary", "p_naive", "lower"))
    rows.append(_rate_row("false-positive rate, Wilcoxon signed-rank (reported beside)", f"{n_lam} null lamellae",
                          nulls, "default", "p_wilcoxon", "p_naive", "lower"))
    rows.append(_rate_row("false-positive rate, secondary (pixel mixed model)", f"{n_lam} null lamellae",
                          nulls, "default", "p_mixed", "p_naive", "lower"))
    rows.append(_rate_row("power, primary (paired t on particle means)", f"{n_eff} lamellae, paper's effect",
                          effects, "default", "p_primary", "p_naive", "higher"))
    rows.append(_rate_row("power, Wilcoxon signed-rank", f"{n_eff} lamellae, paper's effect",
                          effects, "default", "p_wilcoxon", "p_naive", "higher"))
    rows.append(_rate_row("power at p < 0.01 (the paper's threshold), primary", f"{n_eff} lamellae, paper's effect",
                          effects, "default", "p_primary", "p_naive", "higher", alpha=0.01))
    for variant, what in (("derived_pixel", "start derived from the bias of the shallowest band pixels (session 3)"),
                          ("offset_1pct", "bands from 2.326 probe sigma (1 % contamination, fixed)"),
                          ("offset_0", "bands from the NMC edge")):
        rows.append(_rate_row(f"false-positive rate, primary, {what}", f"{n_lam} null lamellae",
                              nulls, variant, "p_primary", "p_naive", "lower"))
        rows.append(_rate_row(f"power, primary, {what}", f"{n_eff} lamellae, paper's effect",
                              effects, variant, "p_primary", "p_naive", "higher"))
        rows.append(_rate_row(f"power at p < 0.01, primary, {what}", f"{n_eff} lamellae, paper's effect",
                              effects, variant, "p_primary", "p_naive", "higher", alpha=0.01))
    starts = np.array([r["default"]["offset_nm"] / r["default"]["sigma_eff_nm"] for r in nulls + effects])
    n_fallback = sum(not str(r["default"]["rule"]).startswith("bias") for r in nulls + effects)
    log(f"calibration: derived band start {np.min(starts):.2f}–{np.max(starts):.2f} σ_eff (median "
        f"{np.median(starts):.2f}; 1 % depth = 2.33 σ_eff), {n_fallback} of {len(starts)} lamellae fell back")
    rows.append(row("calibration", f"{n_lam + n_eff} lamellae; {n_fallback} fell back to 2.33",
                    "derived band start, median (σ_eff)", "σ_eff", float(np.median(starts)),
                    "1 % contamination depth", 2.326, better=None))
    eff = np.array([r["default"]["effect"] for r in effects], float)
    eff0 = np.array([r["default"]["effect"] for r in nulls], float)
    npairs = np.array([r["default"]["n_pairs"] for r in nulls + effects], float)
    log(f"calibration: effect (electrolyte − void) null mean {np.nanmean(eff0):+.4f} sd {np.nanstd(eff0):.4f}; "
        f"paper's effect mean {np.nanmean(eff):+.4f} sd {np.nanstd(eff):.4f}; pairs per lamella "
        f"{np.nanmin(npairs):.0f}–{np.nanmax(npairs):.0f} (median {np.nanmedian(npairs):.0f})")
    rows.append(row("calibration", f"{n_lam + n_eff} lamellae, 2 processes", "wall time of the lamella simulations",
                    "s", t_lamellae, "—", None))

    t1 = time.perf_counter()
    for k, (kind, metric, better) in enumerate((
            ("lognormal", "bimodality false-alarm rate", "lower"),
            ("gamma", "bimodality false-alarm rate", "lower"),
            ("normal", "bimodality false-alarm rate", "lower"),
            ("bimodal_4sd", "bimodality power", "higher"),
            ("bimodal_6sd", "bimodality power", "higher"))):
        res = bimodality_rates(kind, n_draws, seed=1000 * (k + 1))
        log(f"  bimodality {kind}: rule {res['k']}/{res['n']}, BIC {res['k_bic']}/{res['n']}")
        rows.append(_bimodality_row(res, metric, better))
    rows.append(row("calibration", f"{5 * n_draws} samples", "wall time of the bimodality draws", "s",
                    time.perf_counter() - t1, "—", None))
    return rows


def main(argv=None) -> int:
    """Command line: ``python3 benchmarks/bench_calibration.py [--quick] [--cache DIR] [--json FILE]``."""
    import argparse
    import json
    import sys

    from _common import format_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"{N_LAMELLAE_QUICK} lamellae per arm and {N_DRAWS_QUICK} bimodality draws")
    parser.add_argument("--cache", type=Path,
                        help="keep the simulated, measured lamellae in DIR/calibration and reuse them")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--lamellae", type=Path, help="write every lamella's tests to this JSON file")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    _common.CACHE_DIR = args.cache
    global LAMELLAE_JSON
    LAMELLAE_JSON = args.lamellae
    rows = run(quick=args.quick)
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=float))
    return 0


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
