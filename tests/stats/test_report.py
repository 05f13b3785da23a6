"""Tests of stats.report: the self-contained run report rendered from the files of a run folder."""

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest
import tifffile

from ceimap.stats.report import write_report

SEM_PIXEL_NM = 10.0
STXM_PIXEL_NM = 40.0
PARTICLES = [(1, 60, 60, 35), (2, 60, 140, 28), (3, 140, 100, 40)]  # id, row, col, radius (SEM px)


def make_fake_run(out, *, with_s_edge=True, with_particles=True, nan_summary=False):
    """A small but complete run folder: 200×200 SEM grid (10 nm), 3 round particles, 50×50 STXM grid."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ny = nx = 200
    yy, xx = np.mgrid[:ny, :nx]
    classes = np.full((ny, nx), 3, np.uint8)  # electrolyte background
    classes[:, 185:] = 0  # outside the analysed area
    classes[170:185, 10:60] = 4  # a void
    particles = np.zeros((ny, nx), np.uint32)
    egt2g = np.full((ny, nx), np.nan, np.float32)
    for pid, r0, c0, rad in (PARTICLES if with_particles else []):
        d = np.hypot(yy - r0, xx - c0)
        classes[(d <= rad + 5) & (classes != 0)] = 2
        classes[d <= rad] = 1
        particles[d <= rad] = pid
        egt2g[d <= rad + 5] = 1.4 + 0.1 * pid + 0.02 * rng.standard_normal(np.sum(d <= rad + 5))
    sem = (100.0 + 60.0 * (classes == 1) - 40.0 * (classes == 4) + 5 * rng.standard_normal((ny, nx))).astype(
        np.float32)
    tifffile.imwrite(out / "classes.tif", classes)
    tifffile.imwrite(out / "particles.tif", particles)
    tifffile.imwrite(out / "egt2g.tif", egt2g)
    tifffile.imwrite(out / "sem.tif", sem)

    matrix = [[4.0, 0.0, 1.5], [0.0, 4.0, 1.5], [0.0, 0.0, 1.0]]
    drift = rng.normal(0, 1.0, (12, 2)).round(2).tolist()
    reg = {"Ni-L": {"matrix": matrix, "quality": 0.91, "method": "mutual-information", "drift_shifts_px": drift,
                    "stxm_pixel_nm": STXM_PIXEL_NM}}
    if with_s_edge:
        reg["S-L"] = {"matrix": matrix, "quality": 0.74, "method": "mutual-information",
                      "drift_shifts_px": drift[:8], "stxm_pixel_nm": STXM_PIXEL_NM}
    (out / "registration.json").write_text(json.dumps(reg))

    # native STXM pixel table (every 4th SEM pixel)
    rows = []
    for y in range(50):
        for x in range(50):
            c = classes[4 * y + 2, 4 * x + 2]
            pid = int(particles[4 * y + 2, 4 * x + 2])
            if c == 1:
                region = "bulk"
            elif c == 2:
                region = "surface_electrolyte" if x % 2 else "surface_void"
            else:
                continue
            value = float(egt2g[4 * y + 2, 4 * x + 2])
            rows.append((x, y, pid, region, value, 0.05))
    pix = pd.DataFrame(rows, columns=["x", "y", "particle_id", "region", "egt2g", "egt2g_sigma"])
    pix.to_csv(out / "pixels.csv", index=False)

    plist = []
    for pid, r0, c0, rad in (PARTICLES if with_particles else []):
        v = pix.loc[(pix.particle_id == pid) & (pix.region == "bulk"), "egt2g"]
        plist.append(dict(particle_id=pid, area_nm2=np.pi * (rad * SEM_PIXEL_NM) ** 2,
                          equivalent_diameter_nm=2 * rad * SEM_PIXEL_NM, centroid_x_nm=c0 * SEM_PIXEL_NM,
                          centroid_y_nm=r0 * SEM_PIXEL_NM, egt2g_mean=v.mean(), egt2g_sd=v.std(), egt2g_n=len(v),
                          contact_ratio_electrolyte=0.6 + 0.1 * pid, contact_ratio_void=0.1,
                          egt2g_surface_electrolyte_mean=1.3, egt2g_surface_void_mean=1.5))
    pd.DataFrame(plist, columns=["particle_id", "area_nm2", "equivalent_diameter_nm", "centroid_x_nm",
                                 "centroid_y_nm", "egt2g_mean", "egt2g_sd", "egt2g_n",
                                 "contact_ratio_electrolyte", "contact_ratio_void",
                                 "egt2g_surface_electrolyte_mean", "egt2g_surface_void_mean"]
                 ).to_csv(out / "particles.csv", index=False)
    th = []
    for pid, r0, c0, rad in (PARTICLES if with_particles else []):
        for a in np.linspace(0, 2 * np.pi, 20, endpoint=False):
            th.append((pid, (c0 + rad * np.cos(a)) * 10, (r0 + rad * np.sin(a)) * 10, 50 + 10 * rng.random()))
    pd.DataFrame(th, columns=["particle_id", "x_nm", "y_nm", "thickness_nm"]).to_csv(out / "thickness.csv",
                                                                                    index=False)
    spectra = []
    for edge, e in (("Ni-L", np.linspace(845, 875, 31)), ("S-L", np.linspace(158, 180, 23))):
        if edge == "S-L" and not with_s_edge:
            continue
        for cname, amp in (("NMC", 1.0), ("interphase", 0.6), ("electrolyte", 0.2), ("void", 0.0)):
            for energy in e:
                spectra.append((edge, cname, energy, amp * (1 + np.tanh(energy - e.mean())), 0.05, 100))
    pd.DataFrame(spectra, columns=["edge", "class_name", "energy_ev", "od_mean", "od_sd", "n_pixels"]).to_csv(
        out / "class_spectra.csv", index=False)
    nan = float("nan")
    summary = {
        "name": "fake", "sample": "100 cycles to 4.25 V", "sem_pixel_nm": SEM_PIXEL_NM,
        "class_fractions": {"nmc": 0.3, "interphase": 0.1, "electrolyte": 0.5, "void": 0.02},
        "n_particles": len(plist),
        "interphase_thickness_nm": {"mean": nan if nan_summary else 55.0, "sd": 3.0, "median": 55.0, "n": 60,
                                    "resolvable": True},
        "egt2g": {"bulk": {"mean": 1.6, "sd": 0.1, "n": 300},
                  "surface_electrolyte": {"mean": 1.5, "sd": 0.1, "n": 40},
                  "surface_void": {"mean": nan, "sd": nan, "n": 0}},
        "tests": {"surface_electrolyte_vs_void": {"p_value": nan if nan_summary else 0.0042, "statistic": 3.9,
                                                  "method": "paired t on per-particle means",
                                                  "effect": -0.2, "ci_low": -0.31, "ci_high": -0.09,
                                                  "n_units": 3},
                  "surface_electrolyte_vs_void_pixels_naive": {
                      "p_value": 1e-12, "method": "Welch t over pixels (pseudo-replicated; not valid)",
                      "effect": -0.2, "n_units": 98, "reason": None}},
        "regions": {"surface_band_nm": 80.0, "bulk_margin_nm": 90.0, "reach_nm": 70.0, "resolution_nm": 50.0},
        "bimodality": {"bulk_particles": {"bimodal": False, "dip_p": 0.71, "n": 3}},
        "correlations": {"egt2g_vs_size": {"r": 0.2, "p": 0.8, "method": "pearson", "ci_low": -0.99,
                                           "ci_high": 0.99, "n": 3,
                                           "spearman": {"rho": 0.5, "p": 0.67, "ci_low": nan, "ci_high": nan}},
                         "egt2g_vs_contact_ratio": {"r": -0.3, "p": 0.6, "method": "pearson", "n": 3}},
        "provenance": {"version": "0.1.0", "seed": 7,
                       "versions": {"numpy": np.__version__, "absent": None},
                       "parameters": {"t2g_ev": 850.0, "eg_ev": 852.0, "od": {"i0": list(range(100))}},
                       "inputs": [{"path": "raw/sem.tif", "sha256": "ab" * 32}]},
    }
    (out / "summary.json").write_text(json.dumps(summary))
    if with_s_edge:
        (out / "s_edge.json").write_text(json.dumps(
            {"electrolyte": {"position_ev": 163.9, "sigma_ev": 0.02, "n_pixels": 400, "reason": None},
             "interphase": {"position_ev": 164.1, "sigma_ev": 0.03, "n_pixels": 60, "reason": None},
             "shift": {"shift_ev": 0.2, "sigma_ev": 0.036, "z": 5.5, "p_value": 3.7e-8, "ci_low": 0.13,
                       "ci_high": 0.27, "method": "z test on fitted positions", "reason": None},
             "method": "edge fit of region-averaged spectra"}))
    return out


def _images(text):
    return re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)


def test_report_complete_run_has_every_section_and_embedded_pngs(tmp_path):
    run = make_fake_run(tmp_path / "run")
    (run / "report.html").write_text("old")
    path = write_report(run)
    assert path == run / "report.html"
    text = path.read_text(encoding="utf-8")
    for section in ("Key results", "Maps", "Spectra per class", "by region", "Per particle",
                    "Interphase thickness", "Statistical tests", "Bimodality", "Correlations", "S L-edge",
                    "Registration and drift", "Methods", "Provenance"):
        assert f">{section}" in text or section in text, section
    images = _images(text)
    # SEM+classes, e_g/t_2g map, spectra, histograms, per-particle x2, thickness, drift
    assert len(images) == 8
    for b64 in images:
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    # self-contained: nothing loaded from elsewhere
    assert not re.search(r'(src|href)="(https?:|//|file:)', text)
    assert "<link" not in text and "<script" not in text
    # numbers from the files
    assert "0.0042" in text  # the test's p-value
    assert "[-0.31, -0.09]" in text  # effect CI
    assert "ab" * 32 in text  # input hash in provenance
    assert "850 eV" in text and "852 eV" in text  # methods paragraph uses the parameters
    assert "163.9" in text and "0.2 eV" in text and "[0.13, 0.27]" in text  # S-edge table and shift
    assert "[-0.99, 0.99]" in text and "0.5" in text  # Pearson CI, Spearman rho
    assert "pseudo-replicated" in text  # every test listed
    assert "surface band 80 nm wide" in text
    assert "<td>50 nm</td>" in text  # resolution from summary["regions"]
    assert "absent" not in text  # versions that are None are not listed
    assert "[100 values]" in text  # long parameter lists are abbreviated
    assert "paired t on per-particle means" in text
    assert "Freedman–Diaconis" in text  # default histogram bins
    assert not list(run.glob(".report.html.*"))  # no temporary file left behind


def test_report_missing_optional_pieces_say_not_available(tmp_path):
    run = make_fake_run(tmp_path / "run", with_s_edge=False, with_particles=False, nan_summary=True)
    (run / "s_edge.json").unlink(missing_ok=True)
    (run / "sem.tif").unlink()
    text = write_report(run).read_text(encoding="utf-8")
    assert "not available" in text
    assert "no S-L stack" in text
    assert "no particles" in text
    readable = re.sub(r"data:image/png;base64,[^\"]+", "", text)  # a figure's base64 may spell NaN by chance
    assert "NaN" not in readable and "nan" not in readable.lower().split("<style>")[0]


def test_report_refuses_a_missing_folder(tmp_path):
    from ceimap.segment.errors import CeimapInputError

    with pytest.raises(CeimapInputError, match="not a run folder"):
        write_report(tmp_path / "nope")


def test_report_of_empty_folder_still_renders(tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    text = write_report(run).read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert text.count("not available") >= 8
    assert _images(text) == []


def test_report_paper_bins_option_uses_ten_bins(tmp_path):
    full = make_fake_run(tmp_path / "full")
    run = tmp_path / "pixels_only"
    run.mkdir()
    (run / "pixels.csv").write_bytes((full / "pixels.csv").read_bytes())
    text = write_report(run, paper_bins=True).read_text(encoding="utf-8")
    assert "ten bins over 0.7–2.4" in text
    assert len(_images(text)) == 1


def test_report_shows_unmixing_components_and_abundance_maps(tmp_path):
    run = make_fake_run(tmp_path / "run")
    before = len(_images(write_report(run).read_text(encoding="utf-8")))
    e = np.linspace(845, 860, 30)
    rows = [{"edge": "Ni-L", "component": c, "energy_ev": x, "od": v}
            for c, amp in (("nmc", 1.0), ("electrolyte", 0.1), ("interphase", 0.4)) for x, v in zip(e, amp * np.exp(-((e - 853) / 2) ** 2))]
    pd.DataFrame(rows).to_csv(run / "components.csv", index=False)
    ab = np.random.default_rng(1).uniform(0, 1, (4, 50, 50)).astype(np.float32)
    tifffile.imwrite(run / "abundances.tif", ab, photometric="minisblack")
    text = write_report(run).read_text(encoding="utf-8")
    assert "Unmixing: components and abundances" in text and "Figure 3b" in text and "Figure 3c" in text
    assert len(_images(text)) == before + 2
    (run / "abundances.tif").unlink()
    assert "unmixing components and abundance maps" in write_report(run).read_text(encoding="utf-8")


def _key_row(text, needle):
    """The <tr> of the key-results table whose first cell contains ``needle``."""
    key = text.split('class="key"', 1)[1].split("</table>", 1)[0]
    rows = [r for r in key.split("<tr") if needle in r]
    assert len(rows) == 1, needle
    return rows[0]


def test_report_reads_correlations_on_the_holm_adjusted_p(tmp_path):
    """Raw p 0.02 but Holm-adjusted 0.08: the key results call it not significant and show both p-values;
    a summary without p_holm (older runs) is read on the raw p and says so."""
    run = make_fake_run(tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    size = summary["correlations"]["egt2g_vs_size"]
    size.update(p=0.02, p_holm=0.08, significant_holm=False, holm_family_size=4)
    size["spearman"].update(p=0.03, p_holm=0.09, significant_holm=False, holm_family_size=4)
    contact = summary["correlations"]["egt2g_vs_contact_ratio"]
    contact.update(p=0.001, p_holm=0.004, significant_holm=True, holm_family_size=4)
    (run / "summary.json").write_text(json.dumps(summary))
    text = write_report(run).read_text(encoding="utf-8")
    row = _key_row(text, "vs size")
    assert "p = 0.020 (Holm-adjusted 0.080)" in row and "p = 0.030 (Holm-adjusted 0.090)" in row
    assert "not significant at α = 0.05 (Holm-adjusted)" in row
    assert "significant (Holm-adjusted p &lt; 0.01)" in _key_row(text, "vs contact ratio")
    assert "<th>p (Holm)</th>" in text and "<td>0.080</td>" in text   # the correlations table

    del size["p_holm"], size["spearman"]["p_holm"]
    del contact["p_holm"]
    (run / "summary.json").write_text(json.dumps(summary))
    text = write_report(run).read_text(encoding="utf-8")
    assert "significant at α = 0.05 (raw p, not corrected for multiple tests)" in _key_row(text, "vs size")


def test_registration_table_shows_the_chance_test_and_an_accepted_failure():
    """The registration table states whether each edge's match beat its turned/mirrored copies, and flags a
    registration kept with --accept-registration although it did not."""
    from ceimap.stats.report_figures import _registration_section

    def edge(better):
        test = {"better_than_chance": better, "edge_correlation": {"z": 63.0 if better else 1.2},
                "mutual_information": {"z": 21.4 if better else 0.3}}
        return {"matrix": [[3.0, 0.0, 5.0], [0.0, 3.0, 7.0], [0.0, 0.0, 1.0]], "method": "mi", "quality": 0.4,
                "metrics": {"chance": test, "nmi": 1.2}}

    html = _registration_section({"registration": {"Ni-L": edge(True), "S-L": edge(False)}})
    text = re.sub(r"<[^>]+>", "", html)
    assert "match vs chance" in text
    assert "better than chance (edges z = 63, MI z = 21.4)" in text
    assert "not better than chance (accepted by the user) (edges z = 1.2, MI z = 0.3)" in text
    older = _registration_section({"registration": {"Ni-L": {**edge(True), "metrics": {"nmi": 1.2}}}})
    assert "not available" in re.sub(r"<[^>]+>", "", older)


def _without_stamp(text):
    return re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", "", text)


def test_report_drawn_with_a_worker_process_is_the_same_page(tmp_path):
    """``render_report(pool=...)``: the largest figures drawn in a spawned worker from the folder's files give
    the page drawn here alone (images byte for byte, text apart from the rendering time stamp)."""
    from ceimap.segment.workers import spawn_pool
    from ceimap.stats.report import _OFFLOADED, render_report

    run = make_fake_run(tmp_path / "run")
    alone = render_report(run)
    with spawn_pool(1) as pool:
        shared = render_report(run, pool=pool)
    assert set(_OFFLOADED) <= {"maps", "histograms", "spectra", "decomposition", "particles"}
    assert _images(shared) == _images(alone) and len(_images(alone)) >= 5
    assert _without_stamp(shared) == _without_stamp(alone)


def test_report_worker_errors_reach_the_caller(tmp_path, monkeypatch):
    """A section failing in the worker fails the report (nothing half-drawn is written)."""
    from concurrent.futures import ThreadPoolExecutor

    import ceimap.stats.report as report

    def broken(run):
        raise RuntimeError("maps went wrong")

    monkeypatch.setattr(report, "_SECTIONS", tuple((sid, title, broken if sid == "maps" else function)
                                                   for sid, title, function in report._SECTIONS))
    run = make_fake_run(tmp_path / "run")
    with pytest.raises(RuntimeError, match="maps went wrong"), ThreadPoolExecutor(1) as pool:
        report.write_report(run, pool=pool)
    assert not (run / "report.html").exists()
