"""The schema of ``summary.json``: what :mod:`ceimap.stats.analysis` writes and :mod:`ceimap.stats.report` reads.

Both sides use the names defined here, so a key cannot be written under one name and looked for under
another: :func:`ceimap.stats.analysis.analyse_maps` and :func:`ceimap.stats.run.summary_record` assemble the
file with them, :mod:`ceimap.stats.inference` (correlations) and :mod:`ceimap.stats.thickness` write their
entries with them, and the report (:mod:`ceimap.stats.report`, :mod:`ceimap.stats.report_load`),
:mod:`ceimap.stats.compare` and :mod:`ceimap.stats.batch` read exactly these keys, one key per value. CONTRACT.md
lists the keys users rely on; the rest (``regions``, ``s_edge``, the extra tests) are extensions that the
report also reads.

Class names
-----------
In ``summary.json`` (``class_fractions``) and ``class_spectra.csv`` (``class_name``) a class is named by its
:class:`ceimap.Class` member in lower case (``"nmc"``, ``"interphase"``, ``"electrolyte"``, ``"void"``); the
report and the viewer show :func:`class_label`.
"""

from __future__ import annotations

from ceimap.segment import Class

FRACTION_CLASSES = (Class.NMC, Class.INTERPHASE, Class.ELECTROLYTE, Class.VOID)
"""The classes of ``class_fractions``, in the order written (every class but ``OUTSIDE``)."""


def class_key(code) -> str:
    """Name of a class in the output files: its :class:`ceimap.Class` member in lower case.

    Examples
    --------
    >>> class_key(2), class_key(Class.NMC)
    ('interphase', 'nmc')
    """
    return Class(code).name.lower()


def class_label(code) -> str:
    """Name of a class shown to people (report, viewer): as :func:`class_key`, with NMC in capitals.

    Examples
    --------
    >>> [class_label(c) for c in FRACTION_CLASSES]
    ['NMC', 'interphase', 'electrolyte', 'void']
    """
    return "NMC" if Class(code) is Class.NMC else class_key(code)


# --------------------------------------------------------------------------------------------------
# keys of summary.json
# --------------------------------------------------------------------------------------------------

class Summary:
    """Top-level keys of ``summary.json`` (CONTRACT.md), in the order the writer puts them."""

    NAME = "name"
    SAMPLE = "sample"
    SEM_PIXEL_NM = "sem_pixel_nm"
    CLASS_FRACTIONS = "class_fractions"            # {class_key(c): area fraction} for c in FRACTION_CLASSES
    N_PARTICLES = "n_particles"
    THICKNESS = "interphase_thickness_nm"          # Thickness keys
    EGT2G = "egt2g"                                # {region: RegionValues keys} for REGIONS
    TESTS = "tests"                                # {Tests name: Test keys}
    BIMODALITY = "bimodality"                      # {BULK_PARTICLES: Bimodality keys}
    CORRELATIONS = "correlations"                  # {Correlations name: Correlation keys}
    REGIONS = "regions"                            # Regions keys
    S_EDGE = "s_edge"                              # SEdge keys, or None without an S-L stack
    PROVENANCE = "provenance"                      # Provenance keys


REGIONS = ("bulk", "surface_electrolyte", "surface_void", "interphase")
"""The regions of ``egt2g`` (native Ni-L STXM pixels, :mod:`ceimap.stats.regions`), in the order written."""


class Thickness:
    """Keys of ``interphase_thickness_nm`` (:func:`ceimap.stats.thickness.summarise_thickness` and the analysis)."""

    MEAN = "mean"
    SD = "sd"
    MEDIAN = "median"
    N = "n"                                        # boundary points
    RESOLVABLE = "resolvable"
    N_PARTICLES = "n_particles"
    PARTICLE_MEAN_SD = "particle_mean_sd"
    RESOLUTION_NM = "resolution_nm"
    REASON = "reason"
    METHOD = "method"
    AREA_CHECK_MEAN_NM = "area_check_mean_nm"
    N_MERGED_SAMPLES = "n_merged_samples"


class RegionValues:
    """Keys of one region of ``egt2g``: e_g/t_2g over its valid native pixels."""

    MEAN = "mean"
    SD = "sd"
    N = "n"                                        # pixels
    N_PARTICLES = "n_particles"


class Tests:
    """Names of the entries of ``tests``."""

    SURFACE = "surface_electrolyte_vs_void"        # the primary test, the particle as unit
    SURFACE_MIXED_MODEL = "surface_electrolyte_vs_void_mixed_model"
    SURFACE_PIXELS_NAIVE = "surface_electrolyte_vs_void_pixels_naive"


class Test:
    """Keys of a test entry of ``tests`` (and of its sub-tests, e.g. ``wilcoxon``, ``welch_all``).

    The independent units are counted in ``n_units``, except in the mixed model, whose units are its groups
    (``n_groups``, the particles; ``n_pixels`` its observations).
    """

    P_VALUE = "p_value"
    STATISTIC = "statistic"
    METHOD = "method"
    EFFECT = "effect"                              # a number: electrolyte minus void
    CI_LOW = "ci_low"
    CI_HIGH = "ci_high"
    N_UNITS = "n_units"
    N_GROUPS = "n_groups"
    EFFECT_SIZE_DZ = "effect_size_dz"
    WILCOXON = "wilcoxon"
    REASON = "reason"


class Bimodality:
    """Keys of ``bimodality``: its one entry and that entry's keys (:func:`ceimap.stats.distributions.bimodality`)."""

    BULK_PARTICLES = "bulk_particles"
    BIMODAL = "bimodal"
    DIP = "dip"
    DIP_P = "dip_p"
    DIP_METHOD = "dip_method"
    MIXTURE_P = "mixture_p"
    MIXTURE_MEANS = "mixture_means"
    N = "n"


class Correlations:
    """Names of the entries of ``correlations``."""

    SIZE = "egt2g_vs_size"
    CONTACT_RATIO = "egt2g_vs_contact_ratio"


class Correlation:
    """Keys of a correlation entry (Pearson) and of its ``spearman`` sub-entry
    (:func:`ceimap.stats.inference.correlation`; Holm by :func:`ceimap.stats.inference.holm_correlations`)."""

    R = "r"                                        # Pearson's r (the entry)
    RHO = "rho"                                    # Spearman's rho (the sub-entry)
    P = "p"                                        # the test's own two-tailed p
    P_HOLM = "p_holm"
    SIGNIFICANT_HOLM = "significant_holm"
    HOLM_FAMILY_SIZE = "holm_family_size"
    CI_LOW = "ci_low"
    CI_HIGH = "ci_high"
    N = "n"                                        # particles (the entry only)
    METHOD = "method"                              # the entry only
    SPEARMAN = "spearman"
    REASON = "reason"
    X = "x"                                        # the particle-table columns correlated (the entry only)
    Y = "y"


class Regions:
    """Keys of ``regions`` (:func:`ceimap.stats.regions.stxm_regions` parameters and the analysis)."""

    SIGMA_EFF_NM = "sigma_eff_nm"
    CONTAMINATION_NM = "contamination_nm"
    SURFACE_OFFSET_NM = "surface_offset_nm"
    SURFACE_BAND_NM = "surface_band_nm"
    BULK_MARGIN_NM = "bulk_margin_nm"
    SURFACE_OFFSET_RULE = "surface_offset_rule"
    RESOLUTION_NM = "resolution_nm"
    N_NATIVE_PIXELS = "n_native_pixels"


class SEdge:
    """Keys of ``s_edge`` (also written alone as ``s_edge.json``)."""

    ELECTROLYTE = "electrolyte"                    # an edge fit: POSITION_EV, SIGMA_EV, N_PIXELS, REASON
    INTERPHASE = "interphase"
    SHIFT = "shift"                                # SHIFT_EV, SIGMA_EV, CI_LOW, CI_HIGH, P_VALUE, METHOD, REASON
    METHOD = "method"
    REASON = "reason"                              # why there is no fit (no registration matrix)
    POSITION_EV = "position_ev"
    SIGMA_EV = "sigma_ev"
    N_PIXELS = "n_pixels"
    SHIFT_EV = "shift_ev"
    P_VALUE = "p_value"


class Provenance:
    """Keys of ``provenance`` (:func:`ceimap.stats.outputs.provenance`); ``INPUTS`` is a list of {PATH, SHA256}."""

    VERSION = "version"
    VERSIONS = "versions"
    CREATED_UTC = "created_utc"
    INPUTS = "inputs"
    PATH = "path"
    SHA256 = "sha256"
    PARAMETERS = "parameters"
    SEED = "seed"
