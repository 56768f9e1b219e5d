"""The HTML report: self-contained, and every image loads in a real headless browser."""

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowfit import FlowDensity, datasets
from flowfit.cli.app import app
from flowfit.diagnostics import build_report, split_rows, write_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = Path(CHROMIUM).exists()

# Appended to a copy of the report: after the load event it records, for every image,
# whether it finished loading with a real size, in an attribute that --dump-dom prints.
IMAGE_CHECK = """
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images).map(
    (img) => ({loaded: img.complete && img.naturalWidth > 0, width: img.naturalWidth}));
  document.body.setAttribute("data-image-check", JSON.stringify(images));
});
</script>
"""


@pytest.fixture(scope="module")
def split():
    return split_rows(datasets.load("old_faithful"), test_fraction=0.25, random_state=0)


@pytest.fixture(scope="module")
def model(split):
    train, _ = split
    return FlowDensity(flow="spline", max_epochs=15, random_state=0).fit(train)


@pytest.fixture(scope="module")
def report(model, split):
    train, test = split
    return build_report(model, test, train=train, title="Old Faithful <test>")


def image_sources(html: str) -> list[str]:
    return re.findall(r'<img [^>]*src="([^"]+)"', html)


def test_report_has_every_section(report):
    for heading in ["Model", "Held-out log-likelihood", "Fit", "Latent diagnostics"]:
        assert f"<h2>{heading}</h2>" in report
    assert "GaussianMixture" in report
    assert "KernelDensity" in report
    assert "N(0, I)" in report
    assert "<title>Old Faithful &lt;test&gt;</title>" in report


def test_report_embeds_png_images(report):
    sources = image_sources(report)

    assert len(sources) == 3  # fit, training curves, latent diagnostics
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        data = base64.b64decode(source.split(",", 1)[1])
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(data) > 10_000


def test_report_needs_no_network(report):
    assert "http://" not in report
    assert "https://" not in report
    assert "<script" not in report
    assert "<link" not in report
    assert "@import" not in report


def test_write_report_keeps_existing_file(report, tmp_path):
    target = tmp_path / "report.html"
    target.write_text("old")
    with pytest.raises(FileExistsError):
        write_report(target, report)

    assert target.read_text() == "old"


def test_cli_report_writes_html(model, split, tmp_path):
    train, test = split
    model.save(tmp_path / "model.flowfit")
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    output = tmp_path / "report.html"
    result = CliRunner().invoke(app, [
        "report", str(tmp_path / "model.flowfit"), str(tmp_path / "test.csv"),
        "--train", str(tmp_path / "train.csv"), "-o", str(output),
    ])
    html = output.read_text(encoding="utf-8")

    assert result.exit_code == 0, result.output
    assert "flowfit report: model.flowfit" in html
    assert "68 held-out rows" in html
    assert len(image_sources(html)) == 3


@pytest.mark.skipif(
    not HAVE_CHROMIUM,
    reason="chromium is not installed; install the Debian package 'chromium' for this test",
)
def test_report_renders_in_headless_chromium(report, tmp_path):
    page = tmp_path / "checked.html"
    page.write_text(report.replace("</body>", IMAGE_CHECK + "</body>"), encoding="utf-8")
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
        "--dump-dom", page.as_uri(),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    match = re.search(r'data-image-check="([^"]*)"', completed.stdout)

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert match is not None, "the page's load handler did not run"
    images = json.loads(match.group(1).replace("&quot;", '"'))
    assert len(images) == len(image_sources(report))
    for image in images:
        assert image["loaded"], images
        assert image["width"] >= 300, images
