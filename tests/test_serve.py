"""fststyle serve through an HTTP client and WebSockets, as the page uses it: photos, blends, limits, the queue,
hostile requests, the webcam and the fast-vs-slow run."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("starlette")
pytest.importorskip("httpx2")

from omegaconf import OmegaConf  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402

from fststyle.errors import UserError  # noqa: E402
from fststyle.io.decode import read_photo  # noqa: E402
from fststyle.io.encode import encode_image  # noqa: E402
from fststyle.serve.app import ServeSettings, create_app  # noqa: E402
from fststyle.serve.batching import BatchingQueue, QueueFull  # noqa: E402
from fststyle.serve.registry import ModelRegistry  # noqa: E402
from fststyle.serve.server import check_bind_address  # noqa: E402
from fststyle.stylize.stylizer import Stylizer  # noqa: E402

BASE = "http://127.0.0.1:8000"
#: Starlette's test client sends Host "testserver" on a WebSocket whatever its base_url; a browser sends this
HOST = {"host": "127.0.0.1:8000"}


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return ModelRegistry([], device=torch.device("cpu"), tile=1024)


def engines(compose, *overrides: str) -> dict:
    """conf/serve.yaml's engine settings (gatys, mrf), with ``overrides``."""
    config = OmegaConf.to_container(compose("serve", *overrides), resolve=True)
    return {"gatys": config["gatys"], "mrf": config["mrf"]}


def client_for(registry: ModelRegistry, **settings) -> TestClient:
    return TestClient(create_app(registry, ServeSettings(**settings)), base_url=BASE)


def photo_bytes(width: int = 64, height: int = 48, exif_maker: str | None = "fststyle test camera") -> bytes:
    """A JPEG of a gradient, with an EXIF maker tag."""
    ramp = np.linspace(0, 255, width * height * 3).reshape(height, width, 3).astype(np.uint8)
    buffer = io.BytesIO()
    exif = Image.Exif()
    if exif_maker:
        exif[0x010F] = exif_maker
    Image.fromarray(ramp).save(buffer, "JPEG", quality=95, exif=exif)
    return buffer.getvalue()


def test_the_page_and_the_models_it_may_choose(registry):
    with client_for(registry) as client:
        page = client.get("/")
        assert page.status_code == 200 and "<title>fststyle</title>" in page.text
        assert client.get("/static/app.js").status_code == 200
        listed = client.get("/api/models").json()
    names = {model["name"]: model["styles"] for model in listed["models"]}
    assert names["multistyle"] == ["starry_night", "the_scream", "udnie"] and "starry_night" in names
    assert listed["engines"] == ["gatys", "mrf"] or listed["engines"] == []


def test_a_stylised_photo_is_what_the_cli_writes(registry):
    """The answer is the network's output encoded as fststyle stylize writes it: sRGB ICC, the photo's EXIF."""
    upload = photo_bytes()
    with client_for(registry) as client:
        answer = client.post("/api/stylize?model=starry_night&strength=0.8", content=upload)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/jpeg" and float(answer.headers["x-network-seconds"]) > 0
    photo = read_photo(upload)
    stylizer = Stylizer.load("starry_night", device="cpu", tile=1024)
    from fststyle.io.convert import pil_to_tensor

    expected = stylizer.stylize(pil_to_tensor(photo.rgb).unsqueeze(0), strength=0.8)
    assert answer.content == encode_image(expected, ".jpg", exif=photo.exif)
    decoded = Image.open(io.BytesIO(answer.content))
    assert decoded.size == (64, 48) and decoded.info.get("icc_profile")
    assert b"fststyle test camera" in decoded.info["exif"]


def test_blends_styles_and_refusals(registry):
    upload = photo_bytes()
    with client_for(registry) as client:
        single = client.post("/api/stylize?model=multistyle&style=udnie", content=upload)
        blend = client.post("/api/stylize", params={"model": "multistyle", "style": json.dumps(
            {"udnie": 0.5, "the_scream": 0.5})}, content=upload)
        png = client.post("/api/stylize?model=the_scream&format=png", content=upload)
        refusals = {
            "no style of a multi-style model": client.post("/api/stylize?model=multistyle", content=upload),
            "unknown style": client.post("/api/stylize?model=multistyle&style=mona_lisa", content=upload),
            "unknown model": client.post("/api/stylize?model=nope", content=upload),
            "a path for a model": client.post("/api/stylize?model=../checkpoints/starry_night.safetensors",
                                              content=upload),
            "bad strength": client.post("/api/stylize?model=the_scream&strength=2", content=upload),
            "bad blend": client.post("/api/stylize?model=multistyle&style={udnie", content=upload),
            "not an image": client.post("/api/stylize?model=the_scream", content=b"GIF89a-not-really"),
            "bad format": client.post("/api/stylize?model=the_scream&format=gif", content=upload),
        }
    assert single.status_code == blend.status_code == png.status_code == 200
    assert single.content != blend.content and png.headers["content-type"] == "image/png"
    for what, answer in refusals.items():
        assert answer.status_code == 400, what
        assert answer.json()["error"], what
    assert "this server has multistyle, starry_night, the_scream" in refusals["a path for a model"].json()["error"]


def test_uploads_past_the_byte_and_pixel_limits_get_413(registry):
    bomb = io.BytesIO()  # 400 megapixels of one colour: a 48 kB PNG that would take 4.8 GB as float pixels
    Image.new("1", (20_000, 20_000)).save(bomb, "PNG")
    with client_for(registry, max_upload_mb=1, max_pixels=1000) as client:
        too_many_bytes = client.post("/api/stylize?model=the_scream", content=b"\xff" * (2**20 + 1))
        too_many_pixels = client.post("/api/stylize?model=the_scream", content=photo_bytes(64, 48))
        still_up = client.get("/api/models")
    with client_for(registry) as client:
        decompression_bomb = client.post("/api/stylize?model=the_scream", content=bomb.getvalue())
    assert too_many_bytes.status_code == 413 and "limit of 1,048,576" in too_many_bytes.json()["error"]
    assert too_many_pixels.status_code == 413 and "64x48 = 3,072 pixels" in too_many_pixels.json()["error"]
    assert decompression_bomb.status_code == 413 and "400,000,000 pixels" in decompression_bomb.json()["error"]
    assert len(bomb.getvalue()) < 2**20 and still_up.status_code == 200


class BlockingStylizer:
    """A stand-in network that waits for ``release`` and records the batches it ran."""

    def __init__(self) -> None:
        self.release, self.batches = threading.Event(), []

    def stylize(self, images, *, strength, preserve_color):
        self.release.wait(timeout=30)
        self.batches.append(images.shape[0])
        return images * strength


def test_the_queue_batches_equal_requests_and_refuses_past_its_bound():
    queue = BatchingQueue(capacity=4, max_batch=2)
    network = BlockingStylizer()
    running = queue.submit(network, torch.zeros(1, 3, 4, 4))
    while queue.waiting:  # the worker took the first request and waits inside the network
        threading.Event().wait(0.01)
    first = queue.submit(network, torch.ones(1, 3, 4, 4), strength=0.5)
    other_size = queue.submit(network, torch.ones(1, 3, 8, 8), strength=0.5)
    same = [first, queue.submit(network, torch.ones(1, 3, 4, 4), strength=0.5)]  # waits behind the other size
    frame = queue.submit(network, torch.ones(1, 3, 2, 2), urgent=True)  # a webcam frame goes first
    with pytest.raises(QueueFull):
        queue.submit(network, torch.ones(1, 3, 4, 4))
    network.release.set()
    results = [future.result(timeout=30) for future in [running, *same, other_size, frame]]
    queue.close()
    assert network.batches == [1, 1, 2, 1]  # the frame; the two equal requests as one batch; the other size
    assert torch.equal(results[1][0], torch.full((1, 3, 4, 4), 0.5)) and results[3][0].shape == (1, 3, 8, 8)
    assert queue.stats.refused == 1 and queue.stats.largest_batch == 2


def test_a_full_queue_answers_503_with_retry_after_and_the_server_stays_up(registry):
    with client_for(registry, queue=1, max_batch=1) as client:
        queue = client.app.app.state.fststyle.queue
        network = BlockingStylizer()
        queue.submit(network, torch.zeros(1, 3, 4, 4))
        while queue.waiting:
            threading.Event().wait(0.01)
        queue.submit(network, torch.zeros(1, 3, 4, 4))  # fills the one waiting place
        refused = client.post("/api/stylize?model=the_scream", content=photo_bytes())
        network.release.set()
        while queue.waiting:
            threading.Event().wait(0.01)
        served = client.post("/api/stylize?model=the_scream", content=photo_bytes())
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert served.status_code == 200


def test_other_hosts_and_other_sites_pages_are_refused(registry):
    upload = photo_bytes()
    with client_for(registry) as client:
        rebinding = client.get("/api/models", headers={"host": "attacker.example:8000"})
        cross_site = client.post("/api/stylize?model=the_scream", content=upload,
                                 headers={"origin": "http://attacker.example"})
        other_port = client.get("/api/models", headers={"origin": "http://127.0.0.1:9999"})
        same_site = client.post("/api/stylize?model=the_scream", content=upload,
                                headers={"origin": "http://localhost:8000", "host": "localhost:8000"})
        with pytest.raises(WebSocketDisconnect), \
                client.websocket_connect("/ws/webcam", headers={**HOST, "origin": "http://attacker.example"}) as socket:
            socket.receive_text()
    assert rebinding.status_code == cross_site.status_code == other_port.status_code == 403
    assert same_site.status_code == 200


def test_the_webcam_socket_serves_frames_and_reports_drops(registry):
    frame = photo_bytes(80, 60, exif_maker=None)
    with client_for(registry) as client, client.websocket_connect("/ws/webcam", headers=HOST) as socket:
        socket.send_text(json.dumps({"model": "mosaic"}))
        assert "unknown model 'mosaic'" in json.loads(socket.receive_text())["error"]
        socket.send_text(json.dumps({"model": "the_scream", "strength": 0.9}))
        for _ in range(5):
            socket.send_bytes(frame)
        report = json.loads(socket.receive_text())
        image = Image.open(io.BytesIO(socket.receive_bytes()))
    assert report["type"] == "frame" and report["width"] == 80 and report["network_seconds"] > 0
    assert report["served"] >= 1 and image.size == (80, 60)


def test_fast_against_slow_converges_live_and_is_scored_like_compare(compose, registry):
    settings = {"engines": engines(compose, "gatys.steps=4"), "slow_image_size": 48}
    reports, images = [], []
    with client_for(registry, **settings) as client, client.websocket_connect("/ws/optimize", headers=HOST) as socket:
        socket.send_text(json.dumps({"model": "the_scream", "engine": "gatys"}))
        socket.send_bytes(photo_bytes())
        while not reports or reports[-1]["type"] != "done":
            reports.append(json.loads(socket.receive_text()))
            if reports[-1]["type"] in ("fast", "progress", "done"):
                images.append(Image.open(io.BytesIO(socket.receive_bytes())))
    kinds = [report["type"] for report in reports]
    assert kinds[0] == "status" and kinds[1] == "fast" and "progress" in kinds and kinds[-1] == "done"
    done = reports[-1]
    assert done["stopped"] is None and done["step"] == done["total"] == 4
    assert set(done["scores"]) == {"fast", "gatys"}
    assert {"content", "style", "tv", "total"} <= set(done["scores"]["gatys"])
    assert images[0].size == images[-1].size == (48, 36)


@pytest.mark.parametrize(("limit", "cancel", "reason"), [(120, True, "cancelled"), (0.5, False, "time limit")])
def test_a_slow_run_stops_when_cancelled_or_out_of_time(compose, registry, limit, cancel, reason):
    settings = {"engines": engines(compose, "gatys.steps=100000"), "slow_image_size": 48, "slow_time_limit": limit}
    with client_for(registry, **settings) as client, client.websocket_connect("/ws/optimize", headers=HOST) as socket:
        socket.send_text(json.dumps({"model": "the_scream", "engine": "gatys"}))
        socket.send_bytes(photo_bytes())
        report = {}
        while report.get("type") != "done":
            report = json.loads(socket.receive_text())
            if report["type"] == "progress" and cancel:
                socket.send_text(json.dumps({"cancel": True}))
            if report["type"] in ("fast", "progress", "done"):
                socket.receive_bytes()
    assert report["stopped"].startswith(reason) and 0 < report["step"] < 100000
    assert set(report["scores"]) == {"fast", "gatys"}


def test_only_loopback_binds_without_the_flag(caplog):
    check_bind_address("127.0.0.1", False)
    check_bind_address("::1", False)
    with pytest.raises(UserError, match="add --allow-remote"):
        check_bind_address("0.0.0.0", False)
    with caplog.at_level("WARNING", logger="fststyle"):
        check_bind_address("0.0.0.0", True)
    assert "anyone who can reach this address" in caplog.text


def test_serve_on_a_public_address_without_the_flag_is_one_line(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "fststyle", "serve", "--host", "0.0.0.0"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: host=0.0.0.0 lets other machines reach this server")
    assert len(result.stderr.strip().splitlines()) == 1
