"""ceimap's Python API: the ``ceimap`` commands as functions (CONTRACT.md, "Python API").

Everything here is a thin layer over the functions the command line calls, so a script gets the same
numbers as ``ceimap run`` / ``ceimap compare`` / ``ceimap train``; ``Result.write`` writes exactly the folder
``ceimap run`` writes. Import it as ``import ceimap`` (``ceimap.run``, ``ceimap.Result``, …).

Examples
--------
>>> import ceimap
>>> result = ceimap.run("datasets/charged/lamella.toml")          # doctest: +SKIP
>>> len(result.particles) == result.summary["n_particles"]         # doctest: +SKIP
True
>>> result.write("results/charged")                                 # doctest: +SKIP
PosixPath('results/charged/report.html')
>>> ceimap.compare([result, ceimap.read_results("results/cycled_4p7v")])["egt2g_bulk"]["p_value"]  # doctest: +SKIP
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from ceimap.segment import Class
from ceimap.segment.errors import CeimapInputError
from ceimap.stats.summary import class_key

if TYPE_CHECKING:  # imported where used: `import ceimap` stays light
    import numpy as np
    import pandas as pd

__all__ = ["Result", "load_lamella", "run", "read_results", "compare", "train"]

NI_EDGE = "Ni-L"


def _no_progress(message: str) -> None:
    pass


def load_lamella(manifest=None, *, sem=None, sem_pixel_nm: float | None = None, stxm: Mapping | None = None,
                 sample: str | None = None):
    """Read one lamella from a ``LAMELLA.toml``, or from an SEM image and STXM stacks.

    Parameters
    ----------
    manifest : str or path-like, optional
        A ``LAMELLA.toml``; or give ``sem`` and ``stxm`` instead.
    sem : str or path-like, optional
        The SEM TIFF.
    sem_pixel_nm : float, optional
        SEM pixel size in nm (default: from the file).
    stxm : mapping of str to path-like, optional
        Edge name to STXM stack file, e.g. ``{"Ni-L": "ni.hdf5", "S-L": "s.hdf5"}``.
    sample : str, optional
        Sample name (overrides the manifest's; default for ``sem``: the SEM file's name).

    Returns
    -------
    ceimap.segment.lamella.Lamella

    Raises
    ------
    CeimapInputError
        Bad or missing input; the message names the file and the problem.
    """
    from ceimap.segment.io import read_lamella, read_sem, read_stack
    from ceimap.segment.lamella import Lamella

    if manifest is not None:
        if sem is not None or stxm:
            raise CeimapInputError("give either LAMELLA.toml or --sem/--stxm, not both")
        lamella = read_lamella(manifest)
        if sample:
            lamella = Lamella(**{**lamella.__dict__, "sample": sample})
        return lamella
    if sem is None or not stxm:
        raise CeimapInputError("give LAMELLA.toml, or --sem SEM and at least one --stxm EDGE=PATH")
    sem_image = read_sem(sem, pixel_size_nm=sem_pixel_nm)
    stacks = {edge: read_stack(path, edge=edge) for edge, path in dict(stxm).items()}
    inputs = [Path(sem)]
    for stack in stacks.values():
        inputs.append(Path(stack.source))
        inputs.extend(Path(p) for p in stack.metadata.get("companions", []))
    name = Path(sem).stem
    return Lamella(name=name, sample=sample or name, sem=sem_image, stacks=stacks, input_paths=inputs)


@dataclass(eq=False)
class Result:
    """One lamella's results: what ``ceimap run`` writes, in memory.

    Attributes
    ----------
    classes : ndarray of uint8, shape (ny, nx)
        Class codes (:class:`ceimap.Class`) on the SEM grid (``classes.tif``).
    particles_map : ndarray of uint32, shape (ny, nx)
        NMC particle ids on the SEM grid, 0 = not NMC (``particles.tif``).
    egt2g : ndarray of float32, shape (ny, nx)
        Ni e_g/t_2g ratio on the SEM grid, NaN where there is no Ni (``egt2g.tif``).
    particles : pandas.DataFrame
        One row per particle, the columns of ``particles.csv``.
    thickness : pandas.DataFrame
        One row per interphase boundary sample point, the columns of ``thickness.csv``.
    pixels : pandas.DataFrame or None
        Every native STXM pixel with its region and ratio (``pixels.csv``; None for a folder without it).
    summary : dict
        The content of ``summary.json``. Computed by :func:`run`, NaN is kept as NaN; read by
        :func:`read_results`, as the file has it (NaN written as null, read as None).
    folder : Path or None
        The results folder it was read from or last written to.
    """

    classes: np.ndarray
    particles_map: np.ndarray
    egt2g: np.ndarray
    particles: pd.DataFrame
    thickness: pd.DataFrame
    pixels: pd.DataFrame | None
    summary: dict
    folder: Path | None = None
    _computed: tuple | None = field(default=None, repr=False)  # (lamella, PipelineResult, Analysis, provenance)

    def write(self, out, overwrite: bool = False) -> Path:
        """Write the results folder ``out``: exactly the files ``ceimap run`` writes, atomically.

        Parameters
        ----------
        out : str or path-like
            Results folder; must be empty or absent unless ``overwrite``; never an input folder.
        overwrite : bool
            Replace the contents of a non-empty ``out``.

        Returns
        -------
        Path
            The ``report.html`` written.
        """
        from ceimap.stats.outputs import AtomicFolder, check_output_folder
        from ceimap.stats.run import write_run

        out = Path(out)
        if self._computed is not None:
            lamella, pipeline_result, analysis, prov = self._computed
            check_output_folder(out, lamella.input_paths, overwrite=overwrite)
            write_run(out, pipeline_result, analysis, prov)
        elif self.folder is not None:  # read from a folder: a copy of that folder's files
            source = Path(self.folder)
            check_output_folder(out, [source / "summary.json"], overwrite=overwrite)
            with AtomicFolder(out) as tmp:
                for path in sorted(source.iterdir()):
                    if path.is_file():
                        shutil.copy2(path, tmp / path.name)
        else:
            raise ValueError("this Result was neither computed by ceimap.run nor read from a folder")
        self.folder = out
        return out / "report.html"


def run(manifest=None, *, sem=None, sem_pixel_nm: float | None = None, stxm: Mapping | None = None, model=None,
        sample: str | None = None, accept_registration: bool = False,
        progress: Callable[[str], None] | None = None) -> Result:
    """One lamella from raw files to results, in memory: the computation of ``ceimap run``.

    Parameters
    ----------
    manifest : str or path-like, optional
        A ``LAMELLA.toml``; or give ``sem`` and ``stxm`` (see :func:`load_lamella`).
    sem, sem_pixel_nm, stxm, sample
        As for :func:`load_lamella` (``ceimap run --sem --sem-pixel-nm --stxm --sample``).
    model : str, path-like or PixelClassifier, optional
        A trained pixel classifier (a model file of ``ceimap train``, or :func:`train`'s result) instead of
        the unsupervised class assignment.
    accept_registration : bool
        Keep a registration that matches no better than chance (``--accept-registration``).
    progress : callable, optional
        Receives progress messages.

    Returns
    -------
    Result
        Arrays, tables and summary; ``Result.write(out)`` writes the results folder.
    """
    import numpy as np

    from ceimap.segment.lamella import check_lamella
    from ceimap.stats.run import egt2g_on_sem, process_and_analyse, run_provenance, summary_record

    progress = progress or _no_progress
    lamella = load_lamella(manifest, sem=sem, sem_pixel_nm=sem_pixel_nm, stxm=stxm, sample=sample)
    check_lamella(lamella, required_edges=(NI_EDGE,))
    pipeline_result, analysis = process_and_analyse(lamella, model=model, progress=progress,
                                                    accept_unmatched=accept_registration)
    prov = run_provenance(lamella, pipeline_result, accept_registration)
    return Result(
        classes=pipeline_result.classes.astype(np.uint8),
        particles_map=pipeline_result.particles.astype(np.uint32),
        egt2g=egt2g_on_sem(pipeline_result),
        particles=analysis.particles,
        thickness=analysis.thickness,
        pixels=analysis.pixels,
        summary=summary_record(lamella, analysis, prov),
        _computed=(lamella, pipeline_result, analysis, prov),
    )


def read_results(folder) -> Result:
    """The results of a folder written by ``ceimap run`` (or :meth:`Result.write`).

    Raises
    ------
    CeimapInputError
        Not a results folder (no ``summary.json``), or one of its maps or tables is missing.
    """
    import json

    import pandas as pd
    import tifffile

    folder = Path(folder)
    if not (folder / "summary.json").is_file():
        raise CeimapInputError("not a ceimap results folder (no summary.json)", path=folder)
    missing = [name for name in ("classes.tif", "particles.tif", "egt2g.tif", "particles.csv", "thickness.csv")
               if not (folder / name).is_file()]
    if missing:
        raise CeimapInputError(f"not a complete results folder: no {', '.join(missing)}", path=folder)
    pixels = folder / "pixels.csv"
    return Result(
        classes=tifffile.imread(folder / "classes.tif"),
        particles_map=tifffile.imread(folder / "particles.tif"),
        egt2g=tifffile.imread(folder / "egt2g.tif"),
        particles=pd.read_csv(folder / "particles.csv"),
        thickness=pd.read_csv(folder / "thickness.csv"),
        pixels=pd.read_csv(pixels) if pixels.is_file() else None,
        summary=json.loads((folder / "summary.json").read_text(encoding="utf-8")),
        folder=folder,
    )


def compare(results_or_folders: Sequence, names: Sequence[str] | None = None) -> dict:
    """Statistics between samples (the particle as the unit): the content of ``ceimap compare``'s
    ``compare.json``, computed in memory.

    Parameters
    ----------
    results_or_folders : sequence of Result or path-like
        Two or more: :func:`run` / :func:`read_results` results, or results folders.
    names : sequence of str, optional
        Sample names; default from each summary (``sample``, else ``name``).

    Returns
    -------
    dict
        The ``compare.json`` keys (CONTRACT.md). ``run_dirs`` holds each result's folder, None for one not
        written. Computed from results in memory, the tables have their full precision where the files
        keep six significant digits: figures can differ from ``ceimap compare`` on the written folders in
        the last digits.
    """
    from ceimap.stats.compare import compare_units, sample_units, units_from_tables

    units, labels, run_dirs = [], [], []
    for item in results_or_folders:
        if isinstance(item, Result):
            units.append(units_from_tables(item.summary, item.thickness, item.pixels, item.particles))
            labels.append(Path(item.folder).name if item.folder is not None else str(item.summary.get("name")))
            run_dirs.append(None if item.folder is None else str(Path(item.folder).resolve()))
        else:
            folder = Path(item)
            if not (folder / "summary.json").is_file():
                raise CeimapInputError("not a ceimap results folder (no summary.json)", path=folder)
            units.append(sample_units(folder))
            labels.append(folder.name)
            run_dirs.append(str(folder.resolve()))
    return compare_units(units, labels, names, run_dirs=run_dirs)


# ---------------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------------

def annotations_path(lamella, annotations=None) -> Path:
    """The annotation image of a lamella: ``annotations`` if given, else its manifest's ``annotations``."""
    path = Path(annotations) if annotations is not None else lamella.annotations_path
    if path is None:
        raise CeimapInputError("no annotations: give --annotations LABELS.tif after this lamella "
                               "(or an `annotations` key in its manifest)",
                               path=lamella.manifest_path or (lamella.input_paths or [None])[0])
    return path


def read_annotated(lamella, path):
    """``(lamella, labels)``: the annotation image read and checked on the lamella's SEM grid; the lamella
    records ``path`` as its annotations."""
    from ceimap.segment.io import read_annotations
    from ceimap.segment.lamella import Lamella

    labels = read_annotations(path, lamella.sem.image.shape)
    if not labels.any():  # refused now rather than after the other lamellae are processed
        raise CeimapInputError("the annotation image has no annotated pixel (all 0)", path=path)
    if lamella.annotations_path != path:
        lamella = Lamella(**{**lamella.__dict__, "annotations_path": path})
    return lamella, labels


def train_annotated(annotated: list, *, estimator: str = "random_forest", seed: int = 0,
                    progress: Callable[[str], None] | None = None, warn: Callable[[str], None] | None = None):
    """Train the pixel classifier on ``(lamella, labels)`` pairs (:func:`read_annotated`).

    Refuses annotations of one class only; ``warn`` receives a message naming the classes without any
    annotated pixel (the model will never predict them). Lamellae of the same name are numbered.
    """
    import numpy as np

    from ceimap.segment.pipeline import train_classifier

    present = set()
    for _, labels in annotated:
        present.update(int(v) for v in np.unique(labels) if v > 0)
    unannotated = [f"{int(c)} ({class_key(c)})" for c in Class if c != Class.OUTSIDE and c not in present]
    if len(present) == 1:
        raise CeimapInputError(f"the annotations name only class {present.pop()}: annotate at least two classes",
                               path=", ".join(str(lam.annotations_path) for lam, _ in annotated))
    if unannotated and present and warn is not None:
        warn(f"no annotated pixel of class {', '.join(unannotated)}: the model will never predict it "
             "(annotate some of it to have it found)")
    names = [lam.name for lam, _ in annotated]
    if len(set(names)) != len(names):  # the validation table is keyed by name
        annotated = [(type(lam)(**{**lam.__dict__, "name": f"{lam.name}#{k + 1}"}), a)
                     for k, (lam, a) in enumerate(annotated)]
    return train_classifier(annotated, estimator=estimator, seed=seed, progress=progress or _no_progress)


def train(lamellae: Sequence, annotations: Sequence | None = None, *, estimator: str = "random_forest",
          seed: int = 0, progress: Callable[[str], None] | None = None):
    """Train the supervised pixel classifier from sparse annotations: ``ceimap train`` without the file.

    Parameters
    ----------
    lamellae : sequence of path-like or Lamella
        ``LAMELLA.toml`` files (or :func:`load_lamella` results).
    annotations : sequence of path-like or None, optional
        One annotation image per lamella (uint8 on the SEM grid: 0 not annotated, 1 NMC, 2 interphase,
        3 electrolyte, 4 void); None (for all or one of them) uses the manifest's ``annotations``.
    estimator : {"random_forest", "hist_gradient_boosting"}
    seed : int
    progress : callable, optional
        Receives progress messages.

    Returns
    -------
    ceimap.segment.classifier.PixelClassifier
        ``model.save(path)`` writes the model file; ``model.validation`` holds the leave-one-lamella-out
        figures (two or more lamellae); :func:`run` accepts it as ``model``.
    """
    from ceimap.segment.lamella import Lamella, check_lamella

    annotations = [None] * len(lamellae) if annotations is None else list(annotations)
    if len(annotations) != len(lamellae):
        raise CeimapInputError(f"{len(annotations)} annotation images for {len(lamellae)} lamellae")
    if not lamellae:
        raise CeimapInputError("no lamella given")
    annotated = []
    for item, labels_path in zip(lamellae, annotations):
        lamella = item if isinstance(item, Lamella) else load_lamella(item)
        check_lamella(lamella, required_edges=(NI_EDGE,))
        annotated.append(read_annotated(lamella, annotations_path(lamella, labels_path)))
    return train_annotated(annotated, estimator=estimator, seed=seed, progress=progress,
                           warn=lambda message: warnings.warn(message, stacklevel=3))
