"""Small valid input files of every format, written into a test's folder, for the bad-input and fuzz tests.

Each writer returns the path to give ceimap (the stack file, the ``.hdr``, the ``.ncb`` …); companions are
written beside it. The files are tiny (a few kB) so that a test can cut, corrupt or mutate them freely.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ceimap.segment.io import write_nxstxm, write_sem_tiff, write_tiff_stack
from ceimap.segment.stack import Stack

SEM_PIXEL_NM = 10.0
STXM_PIXEL_NM = 40.0
NI_ENERGIES = np.concatenate([np.arange(845.0, 857.0, 1.0), [860.0, 866.0, 870.0]])
"""12 energies in the Ni L3 window (845–856 eV) and 3 beyond: enough for the e_g/t_2g fit's checks."""
S_ENERGIES = np.concatenate([np.arange(158.0, 161.0, 1.0), np.arange(161.5, 166.5, 0.4), [170.0, 175.0]])


def counts(energies, shape=(12, 14), seed=0) -> np.ndarray:
    """Poisson counts with an empty strip (I0) and an absorbing square, frames (n_e, ny, nx)."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    od = np.zeros(shape)
    od[3:9, 5:12] = 1.0
    scale = 1.0 + 0.1 * np.arange(len(energies))[:, None, None] / max(len(energies), 1)
    return rng.poisson(2000.0 * np.exp(-od[None] * scale)).astype(np.float64)


def stack(energies=NI_ENERGIES, data=None, edge="Ni-L", kind="counts") -> Stack:
    energies = np.asarray(energies, float)
    data = counts(energies) if data is None else np.asarray(data, float)
    return Stack(data=data, energies_ev=energies, pixel_size_nm=STXM_PIXEL_NM, kind=kind, edge=edge,
                 dwell_ms=np.full(energies.size, 1.0))


def sem_image(shape=(48, 56), seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(60, 90, size=shape).astype(np.uint8)
    img[12:36, 20:48] = 200
    return img


def write_sem(folder: Path, name="sem.tif", image=None, pixel_nm=SEM_PIXEL_NM) -> Path:
    path = Path(folder) / name
    write_sem_tiff(path, sem_image() if image is None else image, pixel_nm)
    return path


def write_h5(folder: Path, name="ni_l.hdf5", st: Stack | None = None) -> Path:
    path = Path(folder) / name
    write_nxstxm(path, stack() if st is None else st)
    return path


def write_tif_stack(folder: Path, name="ni_l.tif", st: Stack | None = None) -> Path:
    path = Path(folder) / name
    write_tiff_stack(path, stack() if st is None else st)
    return path


def write_ncb(folder: Path, name="ni_l.ncb", st: Stack | None = None, energies=None, dat_lines=None) -> Path:
    """aXis2000 float32 ``.ncb`` + ``.dat`` (scale −1)."""
    st = stack() if st is None else st
    ncb = Path(folder) / name
    n_e, ny, nx = st.data.shape
    st.data.astype("<f4").tofile(ncb)
    energies = st.energies_ev if energies is None else energies
    px_um = st.pixel_size_nm / 1e3
    lines = dat_lines or ([f"{nx} {ny} -1", f"0 {(nx - 1) * px_um:.6f}", f"0 {(ny - 1) * px_um:.6f}", f"{len(energies)}"]
                          + [f"{e:.4f}" for e in energies]
                          + [f"frame{k} {e:.4f} 1.0" for k, e in enumerate(energies)])
    ncb.with_suffix(".dat").write_text("\n".join(lines) + "\n")
    return ncb


def write_als(folder: Path, name="stack.hdr", st: Stack | None = None, energies=None, points=None) -> Path:
    """ALS ``.hdr`` header + one ``_aNNN.xim`` integer text frame per energy."""
    st = stack() if st is None else st
    hdr = Path(folder) / name
    n_e, ny, nx = st.data.shape
    energies = st.energies_ev if energies is None else energies
    px_um = st.pixel_size_nm / 1e3
    xs = ", ".join(f"{v:.4f}" for v in px_um * np.arange(nx))
    ys = ", ".join(f"{v:.4f}" for v in px_um * np.arange(ny))
    es = ", ".join(f"{e:.3f}" for e in energies)
    if points is not None:  # (n_x, n_y) claimed by the header
        xs = ", ".join(["0.0"] * 2)
        ys = ", ".join(["0.0"] * 2)
        nxh, nyh = points
    else:
        nxh, nyh = nx, ny
    hdr.write_text(
        'ScanDefinition = { Label = "stack"; Type = "Image Scan"; Flags = "Image"; Dwell = 1.0;\n'
        f' Regions = (1, {{ PAxis = {{ Name = "Sample X"; Unit = "um"; Points = ({nxh}, {xs}); }};\n'
        f' QAxis = {{ Name = "Sample Y"; Unit = "um"; Points = ({nyh}, {ys}); }}; }});\n'
        f' StackAxis = {{ Name = "Energy"; Unit = "eV"; Points = ({len(energies)}, {es}); }};\n'
        ' Channels = (1, { Name = "Counter0"; Unit = "counts"; }); };\n')
    for k in range(n_e):
        frame = np.asarray(st.data[k], dtype=np.int64)
        text = "\n".join("\t".join(str(v) for v in row) for row in frame) + "\n"
        hdr.with_name(f"{hdr.stem}_a{k:03d}.xim").write_text(text)
    return hdr


def write_annotations(folder: Path, shape=(48, 56), name="labels.tif", values=(1, 3)) -> Path:
    import tifffile

    labels = np.zeros(shape, np.uint8)
    labels[15:30, 25:40] = values[0]
    labels[2:6, 2:10] = values[1]
    path = Path(folder) / name
    tifffile.imwrite(path, labels)
    return path


def write_manifest(folder: Path, sem="sem.tif", stacks=(("Ni-L", "ni_l.hdf5"),), annotations=None,
                   pixel_nm=None, name="bad") -> Path:
    lines = [f'name = "{name}"', 'sample = "test"']
    if annotations is not None:
        lines.append(f'annotations = "{annotations}"')
    lines += ["[sem]", f'path = "{sem}"']
    if pixel_nm is not None:
        lines.append(f"pixel_size_nm = {pixel_nm}")
    for edge, path in stacks:
        lines += ["[[stxm]]", f'edge = "{edge}"', f'path = "{path}"']
    manifest = Path(folder) / "lamella.toml"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def valid_lamella(folder: Path, stack_format="h5") -> Path:
    """A complete small lamella (SEM, Ni-L and S-L stacks) and its manifest; returns the manifest."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_sem(folder)
    writers = {"h5": (write_h5, ".hdf5"), "tif": (write_tif_stack, ".tif"), "ncb": (write_ncb, ".ncb"),
               "als": (write_als, ".hdr")}
    write, ext = writers[stack_format]
    ni = write(folder, "ni_l" + ext, stack())
    s = write(folder, "s_l" + ext, stack(S_ENERGIES, edge="S-L"))
    return write_manifest(folder, stacks=(("Ni-L", ni.name), ("S-L", s.name)))
