"""The page in a real browser: headless Chromium (Playwright) against a server on a free 127.0.0.1 port.

Real Kvasir-SEG images are uploaded; the page must show the overlay (mask and box), switch between the passes,
count progress, report an unreadable file without stopping, and download the masks that `samsp predict` writes.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from servers import serving

from samsp import ModelConfig, Predictor, SamSP
from samsp.cli import main
from samsp.data import read_image
from samsp.inference.outputs import overlay
from samsp.modeling.card import card_from_meta, read_card
from samsp.modeling.persistence import read_model_meta
from samsp.serve.app import create_app

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)
expect, sync_playwright = playwright_api.expect, playwright_api.sync_playwright


CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAPTOP = {"width": 1366, "height": 768}
WAIT_MS = 180_000  # a busy 2-core CPU


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: install it (Debian: apt-get install chromium; .ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def kvasir(shared_data) -> list[Path]:
    return sorted((shared_data / "kvasir-seg" / "images").glob("*.jpg"))


def jpeg_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def as_served(picture: Image.Image) -> np.ndarray:
    """A picture as the page receives it: JPEG at quality 90, decoded."""
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    return jpeg_pixels(buffer.getvalue())


def shown(card) -> np.ndarray:
    src = card.locator("img.overlay").get_attribute("src")
    assert src.startswith("data:image/jpeg;base64,")
    return jpeg_pixels(base64.b64decode(src.split(",", 1)[1]))


def png_mask(path: Path | io.BytesIO) -> np.ndarray:
    return np.asarray(Image.open(path)) == 255


def test_the_page_segments_kvasir_images(browser, kvasir, tiny_model_dir, tmp_path):
    predictor = Predictor(SamSP.from_pretrained(tiny_model_dir))
    # the first images where the (random, tiny) model finds something, so there is a mask and a box to see
    chosen = [p for p in kvasir[:12] if predictor.predict(read_image(p)).box is not None][:3]
    assert len(chosen) == 3
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(chosen[0].read_bytes()[:3000])
    card = read_card(tiny_model_dir, read_model_meta(tiny_model_dir))
    with serving(create_app(predictor, card)) as url:
        page = browser.new_page(viewport=LAPTOP, accept_downloads=True)
        page.goto(url)
        page.wait_for_selector("#card th", timeout=WAIT_MS)
        assert "tiny (128 px input)" in page.inner_text("#card")
        page.set_input_files("#files", [str(p) for p in chosen] + [str(broken)])
        expect(page.locator("#progress-text")).to_have_text("4 / 4", timeout=WAIT_MS)
        assert page.locator(".result.done").count() == 3
        failed = page.locator(".result.failed")
        assert "broken.jpg" in failed.inner_text() and "truncated" in failed.inner_text()

        first = page.locator(".result.done").first
        image = read_image(chosen[0])
        pred = predictor.predict(image)
        assert first.locator(".result-name").inner_text() == chosen[0].name
        assert np.array_equal(shown(first), as_served(overlay(image, pred)))  # the final mask and its box
        assert first.locator(".box").inner_text() == ", ".join(str(round(float(v))) for v in pred.box)
        assert first.locator(".score").inner_text() == f"{pred.score:.3f}"
        assert first.locator("img.overlay").evaluate("img => img.naturalWidth") == image.shape[1]

        first.locator("button[data-pass='0']").click()
        assert first.get_attribute("data-view") == "0"
        first_pass = dataclasses.replace(pred, mask=pred.pass_masks[0])
        assert np.array_equal(shown(first), as_served(overlay(image, first_pass)))
        first.locator("button[data-pass='final']").click()
        assert np.array_equal(shown(first), as_served(overlay(image, pred)))

        with page.expect_download() as download:
            first.locator("a.download").click()
        assert download.value.suggested_filename == f"{chosen[0].stem}.png"
        saved = tmp_path / "page_mask.png"
        download.value.save_as(saved)
        assert main(["predict", "--model", str(tiny_model_dir), str(chosen[0]), "--out", str(tmp_path / "cli")]) == 0
        assert np.array_equal(png_mask(saved), png_mask(tmp_path / "cli" / "masks" / f"{chosen[0].stem}.png"))

        with page.expect_download() as download:
            page.click("#zip")
        archive = zipfile.ZipFile(download.value.path())
        assert archive.namelist() == [f"masks/{p.stem}.png" for p in chosen]
        assert archive.testzip() is None  # the page's CRC-32s are right
        for path in chosen:
            mask = png_mask(io.BytesIO(archive.read(f"masks/{path.stem}.png")))
            assert np.array_equal(mask, predictor.predict(read_image(path)).mask)

        assert page.evaluate("document.documentElement.scrollWidth") <= LAPTOP["width"]  # no sideways scrolling
        page.screenshot(path=str(tmp_path / "serve.png"))
        page.close()


def test_the_page_with_litemedsam(browser, kvasir, tmp_path):
    """The default backbone (bundled weights, zero-shot), one image: the page works at its real speed."""
    model = SamSP(ModelConfig())
    card = card_from_meta({"model": dataclasses.asdict(model.config), "format": "trainable"}, "litemedsam")
    predictor = Predictor(model)
    with serving(create_app(predictor, card)) as url:
        page = browser.new_page(viewport=LAPTOP, accept_downloads=True)
        page.goto(url)
        page.wait_for_selector("#card th", timeout=WAIT_MS)
        assert "litemedsam (256 px input)" in page.inner_text("#card")
        page.set_input_files("#files", str(kvasir[0]))
        page.wait_for_selector(".result.done", timeout=WAIT_MS)
        assert page.inner_text("#progress-text") == "1 / 1"
        with page.expect_download() as download:
            page.click(".result.done a.download")
        saved = tmp_path / "mask.png"
        download.value.save_as(saved)
        assert np.array_equal(png_mask(saved), predictor.predict(read_image(kvasir[0])).mask)
        page.screenshot(path=str(tmp_path / "litemedsam.png"))
        page.close()
