"""Render a run's ``report.html`` in headless Chromium and save it as PNG page(s) — to look at the report as
a reader does, and for the README's picture.

    python3 tools/report_screenshot.py OUT/report.html /tmp/shots            # full page, cut into pages
    python3 tools/report_screenshot.py OUT/report.html docs/report.png --top 1800 --max-kb 400

Chromium (``/usr/bin/chromium`` or ``$CHROMIUM``) renders the page once into one tall PNG (``--headless
--screenshot``, a window ``--width`` px wide and as tall as the page; no network: the report is
self-contained). Without ``--top`` the tall image is cut into pages of ``--page-height`` px saved as
``DIR/report_01.png`` … (``DIR`` a folder). With ``--top H`` only the top ``H`` px are kept and saved to the
given PNG path, resized (and quantised if needed) until it is at most ``--max-kb`` kilobytes.

The page height is found by rendering once at a generous height and trimming the uniform background below
the content (headless screenshots cannot scroll).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

DEFAULT_CHROMIUM = "/usr/bin/chromium"


def chromium_path() -> str:
    """The Chromium executable: ``$CHROMIUM``, ``/usr/bin/chromium`` or ``chromium`` on the PATH."""
    for candidate in (os.environ.get("CHROMIUM"), DEFAULT_CHROMIUM, shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise FileNotFoundError("no Chromium found: set $CHROMIUM")


def render(html_path, png_path, width: int = 1400, height: int = 20000, timeout_s: float = 180.0) -> Path:
    """Screenshot of ``html_path`` in a ``width`` × ``height`` headless window (the page's top left)."""
    html_path = Path(html_path).resolve()
    png_path = Path(png_path).resolve()
    with tempfile.TemporaryDirectory(prefix="ceimap_chromium_") as profile:
        cmd = [chromium_path(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
               "--force-device-scale-factor=1", f"--window-size={int(width)},{int(height)}",
               f"--screenshot={png_path}", "--virtual-time-budget=5000", html_path.as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if not png_path.exists():
        raise RuntimeError(f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return png_path


def content_height(image: np.ndarray, margin_px: int = 24) -> int:
    """Rows down to the last one that differs from the page background (the bottom-left pixel's colour)."""
    rgb = np.asarray(image)[..., :3].astype(int)
    background = rgb[-1, 0]
    differs = np.any(np.abs(rgb - background) > 6, axis=(1, 2))
    rows = np.nonzero(differs)[0]
    return int(min(rgb.shape[0], (rows.max() + 1 + margin_px) if rows.size else rgb.shape[0]))


def save_small(image, path, max_kb: float = 400.0) -> Path:
    """Save a PIL image as PNG of at most ``max_kb`` kB: shrink by 10 % steps, then quantise to 256 colours."""
    from PIL import Image

    path = Path(path)
    img = image.convert("RGB")
    for _ in range(30):
        for candidate in (img, img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)):
            candidate.save(path, optimize=True)
            if path.stat().st_size <= max_kb * 1024:
                return path
        img = img.resize((int(img.width * 0.9), int(img.height * 0.9)), Image.Resampling.LANCZOS)
    return path


def screenshot_report(html_path, out, *, width: int = 1400, page_height: int = 1800, top: int | None = None,
                      max_kb: float | None = None, max_height: int = 30000) -> list[Path]:
    """Render ``html_path`` and save it as pages (``out`` a folder) or its top ``top`` px (``out`` a PNG).

    Returns
    -------
    list of Path
        The PNG files written.
    """
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    with tempfile.TemporaryDirectory(prefix="ceimap_shot_") as tmp:
        tall = render(html_path, Path(tmp) / "tall.png", width=width,
                      height=min(max_height, top + 200) if top else max_height)
        with Image.open(tall) as im:
            page = im.convert("RGB")
    h = content_height(np.asarray(page))
    page = page.crop((0, 0, page.width, h))
    out = Path(out)
    if top:
        out.parent.mkdir(parents=True, exist_ok=True)
        shot = page.crop((0, 0, page.width, min(top, page.height)))
        return [save_small(shot, out, max_kb) if max_kb else (shot.save(out, optimize=True) or out)]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, y0 in enumerate(range(0, page.height, page_height)):
        path = out / f"report_{i + 1:02d}.png"
        piece = page.crop((0, y0, page.width, min(y0 + page_height, page.height)))
        if max_kb:
            save_small(piece, path, max_kb)
        else:
            piece.save(path, optimize=True)
        written.append(path)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", help="report.html of a run (or the run folder)")
    parser.add_argument("out", help="folder for the pages, or a .png path with --top")
    parser.add_argument("--width", type=int, default=1400, help="window width in px (default 1400)")
    parser.add_argument("--page-height", type=int, default=1800, help="height of each page in px")
    parser.add_argument("--top", type=int, default=None, help="keep only the top TOP px, saved to OUT (.png)")
    parser.add_argument("--max-kb", type=float, default=None, help="shrink each PNG to at most this size")
    args = parser.parse_args(argv)
    html_path = Path(args.html)
    if html_path.is_dir():
        html_path = html_path / "report.html"
    if not html_path.exists():
        print(f"no such report: {html_path}", file=sys.stderr)
        return 2
    for path in screenshot_report(html_path, args.out, width=args.width, page_height=args.page_height,
                                  top=args.top, max_kb=args.max_kb):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
