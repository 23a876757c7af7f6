"""`samsp serve`'s API (tiny backbone, CPU): answers equal the Predictor's, every bad input is a one-line 4xx and the
server goes on, requests queue for the one model while health still answers, and the OpenAPI schema holds."""

from __future__ import annotations

import base64
import csv
import io
import struct
import threading
import time
import zipfile
import zlib

import httpx
import numpy as np
import pytest
import schemathesis
import torch
from fastapi.testclient import TestClient
from helpers import ellipse_pair
from hypothesis import HealthCheck, settings
from PIL import Image
from servers import serve_process, serving

from samsp import ModelConfig, Predictor, SamSP
from samsp.cli import main
from samsp.data import decode_image, read_image
from samsp.inference.outputs import overlay
from samsp.modeling.card import read_card
from samsp.modeling.persistence import read_model_meta
from samsp.serve.app import create_app
from samsp.serve.server import load_model
from samsp.serve.worker import Limits

LIMITS = Limits(max_bytes=300_000, max_pixels=1_000_000)
MULTIPART = "multipart/form-data"


# ---------------------------------------------------------------- inputs
def encode(array: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def synthetic(i: int, h: int = 96, w: int = 128) -> bytes:
    image, _ = ellipse_pair(h, w, np.random.default_rng(i))
    return encode(image)


def zeros_png(width: int, height: int) -> bytes:
    """A real grayscale PNG of width x height black pixels: hundreds of megapixels in a few hundred kilobytes."""
    squeeze = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    data = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()
    return _png(width, height, data)


def header_only_png(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels but holds almost no data."""
    return _png(width, height, zlib.compress(b"\x00" * 64))


def _png(width: int, height: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def two_frame_gif() -> bytes:
    frames = [Image.new("RGB", (20, 20), color) for color in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def mask_of(b64: str) -> np.ndarray:
    picture = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert picture.mode == "L"
    values = np.asarray(picture)
    assert set(np.unique(values)) <= {0, 255}
    return values == 255


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return SamSP.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def app(model, tiny_model_dir):
    card = read_card(tiny_model_dir, read_model_meta(tiny_model_dir))
    return create_app(Predictor(model), card, LIMITS, engine={"precision": "fp32"})


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as client:
        yield client


def assert_answer_is_the_predictors(answer: dict, image: np.ndarray, model: SamSP) -> None:
    expected = Predictor(model).predict(image)
    assert (answer["height"], answer["width"]) == image.shape[:2]
    assert np.array_equal(mask_of(answer["mask_png"]), expected.mask)
    assert np.array_equal(mask_of(answer["pass0_mask_png"]), expected.pass_masks[0])
    assert answer["passes"] == len(expected.pass_masks)
    assert answer["fallback"] == expected.fallback
    assert answer["score"] == pytest.approx(expected.score, abs=1e-4)
    assert answer["foreground"] == pytest.approx(float(expected.mask.mean()), abs=1e-5)
    if expected.box is None:
        assert answer["box"] is None
    else:
        assert answer["box"] == pytest.approx(expected.box.tolist(), abs=0.05)


# ---------------------------------------------------------------- good requests
def test_predict_answers_what_the_predictor_predicts(client, model):
    for i, (h, w) in enumerate([(96, 128), (130, 90), (64, 64)]):
        data = synthetic(i, h, w)
        response = client.post("/api/predict", files={"file": (f"case_{i}.png", data, "image/png")})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["filename"] == f"case_{i}.png" and answer["overlay_jpeg"] is None
        assert answer["milliseconds"] > 0 and answer["queue_milliseconds"] >= 0
        assert_answer_is_the_predictors(answer, decode_image(io.BytesIO(data), "x"), model)


def test_overlays_are_the_overlay_pictures(client, model):
    data = synthetic(7)
    answer = client.post("/api/predict?overlays=true", files={"file": ("a.png", data, "image/png")}).json()
    image = decode_image(io.BytesIO(data), "a.png")
    pred = Predictor(model).predict(image)
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["overlay_jpeg"]))))
    expected = np.asarray(Image.open(io.BytesIO(encode(np.asarray(overlay(image, pred)), "JPEG", quality=90))))
    assert np.array_equal(shown, expected)
    assert Image.open(io.BytesIO(base64.b64decode(answer["pass0_overlay_jpeg"]))).size == (
        image.shape[1],
        image.shape[0],
    )


def test_a_real_kvasir_image(client, model, shared_data):
    path = sorted((shared_data / "kvasir-seg" / "images").glob("*.jpg"))[0]
    response = client.post("/api/predict", files={"file": (path.name, path.read_bytes(), "image/jpeg")})
    assert response.status_code == 200, response.text
    assert_answer_is_the_predictors(response.json(), read_image(path), model)


def test_zip_of_masks_and_scores(client, model):
    files = [("files", (name, synthetic(i), "image/png")) for i, name in enumerate(["a.png", "a.png", "dir/b c.png"])]
    response = client.post("/api/predict/zip", files=files)
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.namelist() == ["masks/a.png", "masks/a_2.png", "masks/b_c.png", "predictions.csv"]
    rows = list(csv.DictReader(io.StringIO(archive.read("predictions.csv").decode())))
    assert [r["image"] for r in rows] == ["a.png", "a.png", "b c.png"]
    for i, row in enumerate(rows):
        expected = Predictor(model).predict(decode_image(io.BytesIO(synthetic(i)), "x"))
        mask = np.asarray(Image.open(io.BytesIO(archive.read(row["mask"])))) == 255
        assert np.array_equal(mask, expected.mask)


def test_health_info_page_and_schema(client):
    assert client.get("/api/health").json() == {"status": "ok", "queued": 0}
    info = client.get("/api/info").json()
    assert info["backbone"] == "tiny" and info["input_size"] == 128 and info["iterations"] == 1
    assert ["backbone", "tiny (128 px input)"] in info["card"]
    assert info["limits"]["max_upload_bytes"] == LIMITS.max_bytes and info["engine"] == {"precision": "fp32"}
    page = client.get("/")
    assert page.status_code == 200 and "samsp" in page.text and "Content-Security-Policy" in page.headers
    assert "https://" not in page.text + client.get("/static/app.js").text  # no CDN: everything is served here
    assert client.get("/static/index.html").status_code == 404  # only the page's own files, looked up by name
    schema = client.get("/openapi.json").json()
    predict = schema["paths"]["/api/predict"]["post"]["responses"]
    assert predict["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/PredictionOut")
    assert {"400", "413", "415", "422"} <= set(predict)


# ---------------------------------------------------------------- bad requests
BAD = [
    ("not an image", {"files": {"file": ("notes.png", b"just some text\n", "image/png")}}, 400, "not an image"),
    ("truncated", {"files": {"file": ("cut.png", synthetic(1)[:5000], "image/png")}}, 400, "truncated"),
    ("zero bytes", {"files": {"file": ("empty.png", b"", "image/png")}}, 400, "0 bytes"),
    ("decompression bomb", {"files": {"file": ("bomb.png", zeros_png(12000, 12000), "image/png")}}, 413, "too large"),
    ("bomb header", {"files": {"file": ("big.png", header_only_png(30000, 30000), "image/png")}}, 413, "too large"),
    ("over the pixel limit", {"files": {"file": ("wide.png", encode(np.zeros((900, 1200), np.uint8)))}}, 413, "large"),
    ("over the byte limit", {"files": {"file": ("noise.bmp", b"BM" + bytes(400_000), "image/bmp")}}, 413, "MiB"),
    ("two frames", {"files": {"file": ("anim.gif", two_frame_gif(), "image/gif")}}, 400, "2 frames"),
    ("postscript", {"files": {"file": ("a.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n", "image/png")}}, 400, "not an image"),
    ("part not an image", {"files": {"file": ("a.txt", synthetic(1), "text/plain")}}, 415, "not an image"),
    ("raw body", {"content": synthetic(1), "headers": {"content-type": "image/png"}}, 415, "multipart/form-data"),
    ("json body", {"json": {"file": "/etc/passwd"}}, 415, "multipart/form-data"),
    ("missing field", {"files": {"image": ("a.png", synthetic(1), "image/png")}}, 422, "missing form field 'file'"),
    ("broken multipart", {"content": b"--x\r\nnonsense", "headers": {"content-type": f"{MULTIPART}; boundary=x"}}, 422,
     "missing form field"),
]  # fmt: skip


@pytest.mark.parametrize(("request_kwargs", "status", "reason"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's, before our refusal
def test_bad_input_is_a_one_line_4xx_and_the_server_goes_on(client, model, request_kwargs, status, reason):
    response = client.post("/api/predict", **request_kwargs)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and reason in detail
    good = client.post("/api/predict", files={"file": ("ok.png", synthetic(2), "image/png")})
    assert good.status_code == 200
    assert np.array_equal(
        mask_of(good.json()["mask_png"]), Predictor(model).predict(decode_image(io.BytesIO(synthetic(2)), "x")).mask
    )


def test_streamed_upload_over_the_limit_is_cut_off(app):
    """A chunked body has no Content-Length: it is counted as it arrives and refused once over the limit."""

    def body():
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
        for _ in range(40):
            yield bytes(10_000)
        yield b"\r\n--b--\r\n"

    with serving(app) as url:
        headers = {"content-type": "multipart/form-data; boundary=b"}
        response = httpx.post(f"{url}/api/predict", content=body(), headers=headers, timeout=60)
        assert response.status_code == 413 and "MiB limit" in response.json()["detail"]
        good = httpx.post(f"{url}/api/predict", files={"file": ("a.png", synthetic(3), "image/png")}, timeout=60)
        assert good.status_code == 200


def test_other_host_names_are_refused(model, tiny_model_dir):
    card = read_card(tiny_model_dir, read_model_meta(tiny_model_dir))
    app = create_app(Predictor(model), card, allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        assert client.get("/api/health").status_code == 200
        assert client.get("/api/health", headers={"host": "attacker.example"}).status_code == 400


def test_serve_without_a_model_is_one_line(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model folder not found" in err


# ---------------------------------------------------------------- the frozen prefix compiled at start-up
def test_a_served_model_with_a_frozen_prefix_compiles_it_once_at_start_up(tmp_path):
    """A server is sent images for as long as it runs, so auto compiles the frozen prefix (OpenVINO on a CPU) when
    it starts; /api/info says so and the answers are the model's up to the graph's rounding."""
    pytest.importorskip("openvino", reason="the OpenVINO prefix engine needs samsp[openvino]")
    torch.manual_seed(0)
    model = SamSP(ModelConfig(backbone="tiny", adapt_stages=1))
    folder = model.save_pretrained(tmp_path / "model")
    with serve_process("--model", str(folder)) as (url, _):
        assert httpx.get(f"{url}/api/info", timeout=30).json()["engine"]["prefix_engine"] == "openvino"
        for i in range(2):
            data = synthetic(i)
            answer = httpx.post(f"{url}/api/predict", files={"file": ("x.png", data, "image/png")}, timeout=60).json()
            expected = Predictor(model).predict(decode_image(io.BytesIO(data), "x"))
            assert (mask_of(answer["mask_png"]) == expected.mask).mean() > 0.99
            assert answer["score"] == pytest.approx(expected.score, abs=1e-2)


def test_the_prefix_engine_a_server_loads_with(tmp_path, tiny_model_dir, samsp_log):
    pytest.importorskip("openvino", reason="the OpenVINO prefix engine needs samsp[openvino]")
    torch.manual_seed(0)
    folder = SamSP(ModelConfig(backbone="tiny", adapt_stages=1)).save_pretrained(tmp_path / "model")
    assert load_model(str(folder))[0].prefix_engine == "openvino"
    assert "CPU, fp32: the frozen prefix runs in OpenVINO" in samsp_log.text
    assert load_model(str(folder), prefix_engine="torch")[0].prefix_engine == "torch"
    assert load_model(str(folder), flips=True)[0].prefix_engine == "openvino"  # each mirrored view's prefix too
    assert load_model(str(tiny_model_dir))[0].prefix_engine == "torch"  # every stage adapted: no frozen prefix


def test_a_prefix_engine_for_an_exported_graph_is_one_line(tmp_path, capsys):
    args = ["serve", "--model", str(tmp_path), "--engine", "onnx", "--prefix-engine", "openvino"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--prefix-engine applies to the PyTorch engine" in err


# ---------------------------------------------------------------- one model, requests queue
class Gate:
    """A segmenter that holds each call until released (any object with `predict(image)` can be served)."""

    def __init__(self, inner: Predictor):
        self.inner, self.release, self.active, self.most = inner, threading.Event(), 0, 0
        self.lock = threading.Lock()

    def predict(self, image):
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        self.release.wait(60)
        try:
            return self.inner.predict(image)
        finally:
            with self.lock:
                self.active -= 1


def test_requests_queue_for_the_model_and_health_still_answers(model, tiny_model_dir):
    gate = Gate(Predictor(model))
    app = create_app(gate, read_card(tiny_model_dir, read_model_meta(tiny_model_dir)))
    answers = {}

    def send(url: str, i: int) -> None:
        files = {"file": (f"{i}.png", synthetic(i), "image/png")}
        answers[i] = httpx.post(f"{url}/api/predict", files=files, timeout=120)

    with serving(app) as url:
        clients = [threading.Thread(target=send, args=(url, i)) for i in range(4)]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/api/health", timeout=5).json()["queued"] < 4:  # health answers while the model is busy
            assert time.monotonic() < deadline, "the requests never queued"
            time.sleep(0.05)
        gate.release.set()
        for thread in clients:
            thread.join(120)
        assert httpx.get(f"{url}/api/health", timeout=5).json() == {"status": "ok", "queued": 0}
    assert gate.most == 1  # never two predictions at once
    for i, response in answers.items():
        assert response.status_code == 200
        expected = Predictor(model).predict(decode_image(io.BytesIO(synthetic(i)), "x"))
        assert np.array_equal(mask_of(response.json()["mask_png"]), expected.mask)


# ---------------------------------------------------------------- the schema, checked by schemathesis
@pytest.fixture(scope="module")
def api_schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=30_000, suppress_health_check=list(HealthCheck))  # ms per example
def test_api_keeps_to_its_schema(case):
    # Every other check runs: no 5xx, documented status codes, content types and bodies. Any bytes fit the
    # schema's "binary" file, but only a decodable image can be accepted, so schema-valid data may get a 4xx.
    case.call_and_validate(excluded_checks=[schemathesis.checks.positive_data_acceptance])
