"""The report's HTML: numbers as text, tables, embedded figures, the page and its atomic write.

Every value goes through :func:`_fmt` or :func:`_fmt_p` (a NaN, ``None`` or missing value becomes "not
available"); figures are drawn on a bare matplotlib ``Figure`` with the Agg canvas and embedded as base64 PNG
(:func:`_figure`); the page (:func:`_page`) has its CSS inline and loads nothing from elsewhere.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import os
import tempfile
from pathlib import Path

from .report_load import _get, _num
from .summary import Correlation, Test


NOT_AVAILABLE = "not available"


def _fmt(value, digits: int = 3, unit: str = "") -> str:
    """Format a number with ``digits`` significant figures, or "not available"."""
    x = _num(value)
    if x is None:
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, str) and value:
            return html.escape(value)
        return f'<span class="na">{NOT_AVAILABLE}</span>'
    if x != 0 and (abs(x) < 1e-4 or abs(x) >= 10 ** (digits + 3)):
        s = f"{x:.{max(digits - 1, 1)}e}"
    elif float(x).is_integer() and abs(x) < 1e9:
        s = f"{int(x)}"
    else:
        s = f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.{max(digits, 1)}g}"
        if "e" in s:
            s = f"{x:.1f}"
    return s + (f" {unit}" if unit else "")


def _fmt_p(value) -> str:
    x = _num(value)
    if x is None:
        return f'<span class="na">{NOT_AVAILABLE}</span>'
    if x <= 0:
        return "&lt; 1e-300"  # underflow: smaller than a double can hold
    if x < 1e-4:
        return f"{x:.1e}"
    return f"{x:.3g}" if x < 0.01 else f"{x:.3f}"


def _p_clause(value) -> str:
    """"p = 0.012" or "p < 1e-300" (HTML)."""
    text = _fmt_p(value)
    return f"p {text}" if text.startswith("&lt;") else f"p = {text}"


def _plain(value) -> str:
    x = _num(value)
    return "n/a" if x is None else f"{x:.2f}"


def _plain_p(value) -> str:
    x = _num(value)
    return "n/a" if x is None else (f"{x:.1e}" if x < 1e-3 else f"{x:.3f}")


def _esc(value) -> str:
    return html.escape(str(value))


def _na(what: str) -> str:
    return f'<p class="na">{_esc(what)}: {NOT_AVAILABLE}.</p>'


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    """An HTML table; cells are already-escaped HTML strings."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            '</table></div>')


def _verdict(p, alpha: float = 0.05, note: str = "") -> str:
    """Reading of a two-tailed p-value at ``alpha``; ``note`` (e.g. "Holm-adjusted") says which p was used."""
    p = _num(p)
    if p is None:
        return f'<span class="na">{NOT_AVAILABLE}</span>'
    which = f"{note} " if note else ""
    if p < 0.01:
        return f"significant ({which}p &lt; 0.01)"
    if p < alpha:
        return f"significant at α = {alpha:g}" + (f" ({note})" if note else "")
    return f"not significant at α = {alpha:g}" + (f" ({note})" if note else "")


def _effect_text(entry) -> str:
    """A test entry's effect with its 95 % CI (``effect``, ``ci_low``, ``ci_high``)."""
    text = _fmt(_get(entry, Test.EFFECT), 3)
    ci = [_get(entry, Test.CI_LOW), _get(entry, Test.CI_HIGH)]
    if _num(ci[0]) is not None and _num(ci[1]) is not None:
        text += f" [{_fmt(ci[0], 3)}, {_fmt(ci[1], 3)}]"
    return text


def _ci_text(entry) -> str:
    """``[ci_low, ci_high]`` of a correlation or of the S-edge shift (the keys are the same in both)."""
    ci = [_get(entry, Correlation.CI_LOW), _get(entry, Correlation.CI_HIGH)]
    if _num(ci[0]) is not None and _num(ci[1]) is not None:
        return f"[{_fmt(ci[0], 3)}, {_fmt(ci[1], 3)}]"
    return f'<span class="na">{NOT_AVAILABLE}</span>'


def _generic_rows(d: dict, keys_first=()):
    """Rows of (key, value) for a flat dict, known keys first."""
    rows = []
    keys = [k for k in keys_first if k in d] + [k for k in d if k not in keys_first]
    for k in keys:
        v = d[k]
        if v is None:
            rows.append([_esc(k), "—"])
        elif isinstance(v, list) and v and all(_num(x) is not None for x in v) and len(v) <= 12:
            rows.append([_esc(k), "[" + ", ".join(_fmt(x, 3) for x in v) + "]"])
        elif isinstance(v, (dict, list)):
            rows.append([_esc(k), _esc(_short_json(v))])
        elif "p" == k or k.endswith("_p") or k.startswith("p_"):
            rows.append([_esc(k), _fmt_p(v)])
        else:
            rows.append([_esc(k), _fmt(v, 4)])
    return rows


def _short_json(v, limit: int = 160) -> str:
    if isinstance(v, list) and len(v) > 12:
        return f"[{len(v)} values]"
    text = json.dumps(v, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _flat_items(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _flat_items(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _new_figure(width_in: float, height_in: float, ncols: int = 1, nrows: int = 1, **kwargs):
    # a bare Figure renders with the Agg canvas on savefig: no pyplot, no GUI backend touched
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def _figure(fig, caption: str, alt: str) -> str:
    # one Agg draw, then the buffer as PNG: ``savefig`` would draw a layout-engine figure twice (a dry run
    # for the constrained layout, then the real one), and the layout and tick text are most of the cost
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.image import imsave

    fig.set_dpi(110)
    fig.set_facecolor("white")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    buf = io.BytesIO()
    # zlib level 1: half the encoding time of the default 6, and no larger on these flat-colour figures
    imsave(buf, canvas.buffer_rgba(), format="png", dpi=110, origin="upper", pil_kwargs={"compress_level": 1})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f'<figure><img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption}</figcaption></figure>")


_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#222;margin:0;background:#f4f5f7}
main{max-width:1180px;margin:0 auto;padding:24px 32px 48px;background:#fff;box-shadow:0 0 12px rgba(0,0,0,.06)}
header{border-bottom:3px solid #d62728;margin-bottom:12px}
h1{font-size:26px;margin:6px 0 4px}h2{font-size:19px;margin:30px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:14px 0 4px}
.meta{color:#666;font-size:13px;margin-bottom:10px}
nav{font-size:13px;margin:8px 0 4px}nav a{margin-right:12px;color:#1f77b4;text-decoration:none}
.scroll{max-width:100%;overflow-x:auto}details .scroll{max-height:420px;overflow-y:auto}
table.key{font-size:14px;width:100%;border:1px solid #e2e2e2}table.key td:first-child{font-weight:600;width:24%}
table.key td:nth-child(2){width:28%}table.key td:last-child{width:18%}
details .scroll thead th{position:sticky;top:0}
figure{margin:12px 0 18px}figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption,.caption{font-size:13px;color:#444;margin-top:6px;line-height:1.45}
table{border-collapse:collapse;margin:8px 0 10px;font-size:13px}
th,td{border-bottom:1px solid #e4e4e4;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f0f1f3;font-weight:600}table.small{font-size:12px}
.na{color:#a33;font-style:italic}code{font-size:12px}code.hash{font-size:11px;color:#555;word-break:break-all}
details{margin:8px 0}summary{cursor:pointer;color:#1f77b4;font-size:13px}
p{line-height:1.5}footer{margin-top:30px;font-size:12px;color:#777}
"""


def _page(title: str, meta: str, sections: list[tuple[str, str, str]], intro: str = "") -> str:
    nav = "".join(f'<a href="#{sid}">{t}</a>' for sid, t, _ in sections)  # titles are trusted HTML
    body = "".join(f'<section id="{sid}"><h2>{t}</h2>{content}</section>' for sid, t, content in sections)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
            f'<body><main><header><h1>{_esc(title)}</h1><div class="meta">{meta}</div><nav>{nav}</nav></header>'
            f'{intro}{body}<footer>Generated by ceimap on {stamp}. Self-contained: all figures are embedded.'
            f'</footer></main></body></html>')


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and :func:`os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
