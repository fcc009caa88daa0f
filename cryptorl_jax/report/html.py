"""report.html: one self-contained page per run that opens offline.

The page is the run's summary.md rendered to HTML (its headings, lists and tables): it opens
with the verdict and the equity curve, then the tables. The equity curve and each segment's
regime plot are embedded as base64 PNGs, with the paper book's figures when the run has one
(`report.paper`), the provenance of run_info.json, and relative links to the tearsheet, the
CSVs and the other files of the run.
It loads nothing from the network: no script, no font, no stylesheet outside the page.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

from cryptorl_jax.core.dictionary import UNITS_HEADING
from cryptorl_jax.core.io import write_atomic
from cryptorl_jax.core.rundir import RunDir
from cryptorl_jax.report.paper import read_paper_status

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { border-bottom: 2px solid #345; padding-bottom: .2em; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .6em 0; font-size: 13px; display: block;
        overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #eef2f6; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; margin: .5em 0; }
code { background: #f3f3f3; padding: 0 3px; }
nav a { margin-right: 1.2em; }
.prov td { text-align: left; white-space: normal; }
"""

_INLINE = [(re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
           (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
           (re.compile(r"\[([^\]]+)\]\(([^)\s\"]+)\)"), r'<a href="\2">\1</a>')]


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    for pattern, repl in _INLINE:
        out = pattern.sub(repl, out)
    return out


_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)\s*$")


def anchor(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces as '-'
    ('Units' -> 'units'), so `[Units](#units)` links in summary.md and in report.html alike."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def markdown_to_html(md: str, base: Path | None = None) -> str:
    """The subset of Markdown the reports write: #/## headings (with GitHub's anchors as ids),
    '- ' lists (two-space nested items), pipe tables, paragraphs, `code`, **bold**, links
    `[text](href)` and image lines `![alt](file.png)`, which are embedded as base64 from `base`
    (a link to the file when it is not there)."""
    lines = md.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        image = _IMAGE.match(line.strip())
        if image:
            alt, name = image.groups()
            path = None if base is None else base / name
            out.append(png_tag(path, alt) if path is not None and path.is_file()
                       else f'<p><a href="{html.escape(name)}">{html.escape(alt)}</a></p>')
            i += 1
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 6)
            text = line[level:].strip()
            out.append(f"<h{level} id=\"{anchor(text)}\">{_inline(text)}</h{level}>")
            i += 1
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            body = [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]
            parts = ["<table><thead><tr>", *[f"<th>{_inline(c)}</th>" for c in rows[0]],
                     "</tr></thead><tbody>"]
            for r in body:
                parts += ["<tr>", *[f"<td>{_inline(c)}</td>" for c in r], "</tr>"]
            parts.append("</tbody></table>")
            out.append("".join(parts))
        elif line.lstrip().startswith("- "):
            items = []
            while i < len(lines) and lines[i].lstrip().startswith("- "):
                nested = lines[i].startswith("  ")
                text = _inline(lines[i].lstrip()[2:])
                items.append(f"<li style='margin-left:{2 if nested else 0}em'>{text}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(
                    ("#", "|")) and not lines[i].lstrip().startswith("- ") \
                    and not _IMAGE.match(lines[i].strip()):
                para.append(lines[i])
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)


def png_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _provenance(rd: RunDir) -> str:
    if not rd.run_info.is_file():
        return "<p>No run_info.json (a run from before provenance was recorded).</p>"
    info = json.loads(rd.run_info.read_text())
    git = info.get("git") or {}
    dev = info.get("devices") or {}
    versions = ", ".join(f"{k} {v}" for k, v in (info.get("versions") or {}).items() if v)
    rows = [("command", " ".join(info.get("command") or [])),
            ("started / finished", f"{info.get('started')} / {info.get('finished')}"),
            ("git commit", f"{git.get('sha')}"
                           + (" (uncommitted changes)" if git.get("dirty") else "")),
            ("devices", f"{dev.get('count')} x {', '.join(dev.get('kinds') or [])} "
                        f"({dev.get('backend')})"),
            ("XLA_FLAGS", str(info.get("xla_flags"))), ("versions", versions),
            ("host", f"{info.get('host')} ({info.get('platform')})"),
            ("peak RSS (MiB)", str(info.get("peak_rss_mb"))),
            ("earlier invocations", str(len(info.get("history") or [])))]
    cells = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                    for k, v in rows)
    return f"<table class='prov'><tbody>{cells}</tbody></table>"


def paper_section(run_dir: Path) -> str:
    """The report page's paper section (HTML), empty without a paper book."""
    status = read_paper_status(run_dir)
    if status is None:
        return ""
    cells = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                    for k, v in status.rows)
    img = png_tag(status.equity_png, "paper equity") if status.equity_png is not None else ""
    return (f"<h2>Paper trading (segment {status.segment}, no orders sent)</h2>{img}"
            f"<table class='prov'><tbody>{cells}</tbody></table>")


def write_report_html(rd: RunDir, summary_md: str, title: str) -> Path:
    """Write rd.report from the summary, the run's PNGs and its run_info.json."""
    links = [(name, name) for name in ("tearsheet.html", "summary.md", "metrics.csv",
                                       "diagnostics.csv",
                                       "comparison.csv", "oos_returns.parquet", "config.yaml",
                                       "run_info.json") if (rd.path / name).is_file()]
    links.append(("units", f"#{anchor(UNITS_HEADING)}"))
    nav = "<nav>" + "".join(f'<a href="{html.escape(href)}">{html.escape(text)}</a>'
                            for text, href in links) + "</nav>"
    images = []
    if rd.equity_png.is_file() and rd.equity_png.name not in summary_md:
        images.append("<h2>Equity (stitched OOS)</h2>" + png_tag(rd.equity_png, "equity curve"))
    regimes = [(k, rd.regimes_png(k)) for k in rd.finished_segments()
               if rd.regimes_png(k).is_file()]
    if regimes:
        images.append("<h2>Filtered regimes per segment</h2>" + "".join(
            png_tag(p, f"segment {k} regimes") for k, p in regimes))
    paper = paper_section(rd.path)
    if paper:
        images.append(paper)
    page = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>", nav,
            markdown_to_html(summary_md, rd.path), *images, "<h2>Provenance</h2>", _provenance(rd),
            "</body></html>"]
    write_atomic(rd.report, "\n".join(page))
    return rd.report
