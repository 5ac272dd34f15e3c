"""The report as a reader sees it: `snakemake --report` of the quick experiment, opened in
headless Chromium (Debian's `chromium` package; .ci/run installs it).

Snakemake's report is a JavaScript application: the landing page and every figure exist only
once a browser has run it, so a check of the HTML file alone would pass a report that shows
nothing. Checked: the landing page (the Snakefile's `report:` description) renders the
headline table, one row per dataset; every figure of the run is in the report and decodes to
an image in the browser; captions say how each task selects.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from .conftest import QUICK, snakemake

pytestmark = pytest.mark.workflow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# A report entry: its path, then (after name, labels, caption...) its embedded data.
ENTRY = re.compile(
    r'"(?P<path>results/[^"]+?\.(?:png|csv))": \{"name".*?"data_uri": "(?P<uri>data:[^"]+)"',
    re.DOTALL,
)


def chromium_dom(page: Path, profile: Path) -> str:
    """The DOM of `page` after its scripts ran, as headless Chromium serialises it."""
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


class Tables(HTMLParser):
    """The rendered <table> elements outside <script>: caption and rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self._script = 0
        self._cell: list[str] | None = None
        self._caption: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "script":
            self._script += 1
        elif self._script:
            return
        elif tag == "table":
            self.tables.append({"caption": "", "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th") and self.tables:
            self._cell = []
        elif tag == "caption" and self.tables:
            self._caption = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script -= 1
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "caption" and self._caption is not None:
            self.tables[-1]["caption"] = " ".join("".join(self._caption).split())
            self._caption = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._caption is not None:
            self._caption.append(data)


@pytest.fixture(scope="module")
def report(request: pytest.FixtureRequest) -> Path:
    """report.html of the quick experiment (the session's quick run; skipped, before running
    anything, where there is no browser to open it)."""
    if CHROMIUM is None:
        pytest.skip(
            "chromium is not installed (Debian: apt-get install chromium; .ci/run installs "
            "it): the report is a JavaScript page that only a browser renders"
        )
    quick_run = request.getfixturevalue("quick_run")
    out = quick_run / "report.html"
    snakemake(quick_run, "--configfile", str(QUICK), "--report", str(out))
    return out


def test_landing_page_shows_the_headline_table(report: Path, tmp_path: Path) -> None:
    dom = chromium_dom(report, tmp_path / "profile")
    parser = Tables()
    parser.feed(dom)
    headline = [t for t in parser.tables if "selected grid point" in t["caption"]]
    assert headline, f"no headline table on the landing page; tables: {parser.tables}"
    header, *rows = headline[0]["rows"]
    assert header[:2] == ["dataset", "technique"] and "test_mse" in header
    expected = pd.read_csv(report.parent / "results" / "quick" / "sweep" / "headline.csv")
    assert [row[0] for row in rows] == list(expected["dataset"]) == ["spec", "w0"]
    summary = pd.read_csv(report.parent / "results" / "quick" / "sweep" / "summary.csv")
    selected = summary[summary["selected"]].set_index("dataset")
    for row in rows:
        cells = dict(zip(header, row, strict=True))
        assert cells["grid_point"] == selected.loc[cells["dataset"], "grid_point"]
        assert float(cells["test_mse"]) == pytest.approx(selected.loc[cells["dataset"], "test_mse"])
    assert "lowest frozen validation MSE" in dom


def test_every_figure_is_in_the_report_and_renders(report: Path, tmp_path: Path) -> None:
    text = report.read_text()
    entries = {m["path"]: m["uri"] for m in ENTRY.finditer(text)}
    workdir = report.parent
    figures = sorted(str(p.relative_to(workdir)) for p in (workdir / "results").rglob("*.png"))
    assert len(figures) == 11  # 4 loss curves, 2 sweeps, 2 × (Graph 1, Graph 2), learnability
    assert sorted(p for p in entries if p.endswith(".png")) == figures
    assert {"results/quick/sweep/summary.csv", "results/quick/sweep/headline.csv"} <= set(entries)

    # Every embedded figure, decoded by the browser: its natural size once the page loaded.
    imgs = "\n".join(
        f'<img data-path="{html.escape(path)}" src="{html.escape(entries[path])}">'
        for path in figures
    )
    page = tmp_path / "figures.html"
    page.write_text(
        "<!doctype html><html><body>"
        + imgs
        + '<pre id="out"></pre><script>window.addEventListener("load", () => {'
        "document.getElementById('out').textContent = JSON.stringify("
        "[...document.images].map(i => [i.dataset.path, i.complete, i.naturalWidth, "
        "i.naturalHeight]));});</script></body></html>"
    )
    dom = chromium_dom(page, tmp_path / "profile")
    found = re.search(r'<pre id="out">(.*?)</pre>', dom, re.DOTALL)
    assert found and found.group(1), dom[-2000:]
    rendered = json.loads(html.unescape(found.group(1)))
    assert [r[0] for r in rendered] == figures
    for path, complete, width, height in rendered:
        assert complete and width >= 200 and height >= 150, (path, width, height)


@pytest.mark.parametrize(
    ("task", "criterion"),
    [("frequency", "lowest"), ("vae", "lowest"), ("classifier", "highest")],
)
def test_captions_say_how_each_task_selects(task: str, criterion: str) -> None:
    """Captions are Jinja templates over the config: each task reads its own metric and
    direction (a VAE or classifier report must not speak of validation MSE)."""
    from jinja2 import Environment

    root = Path(__file__).resolve().parents[1] / "workflow" / "report"
    env = Environment(trim_blocks=True, lstrip_blocks=True)  # as snakemake.report sets it

    # What Snakemake passes a caption as `snakemake` (config, wildcards, params).
    snakemake = SimpleNamespace(
        config={"task": task, "datasets": {"d": {}}, "experts": {}, "grid": {"lr": [0.1]}},
        wildcards={"dataset": "d"},
        params={"criterion": f"{criterion} frozen validation x"},
    )

    metric = {"frequency": "MSE", "vae": "loss", "classifier": "AUC-PR"}[task]
    names = ["sweep_curves.rst", "summary.rst", "workflow.rst"]
    names += [] if task == "frequency" else ["task_figure.rst", "loss_curves.rst"]
    for name in names:
        text = env.from_string((root / name).read_text()).render(snakemake=snakemake, files=[])
        text = " ".join(text.split())
        assert criterion in text and metric in text, (name, text)
        if task != "frequency":
            assert "MSE" not in text, (name, text)
