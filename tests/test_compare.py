"""Fast vs optimisation comparison: real tiny models, the real Caffe VGG-19, the bundled photos."""

import dataclasses
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fststyle.bundled import bundled_path
from fststyle.cli import jobs
from fststyle.compare.job import compare
from fststyle.compare.report import column_labels
from fststyle.compare.scoring import ComparisonError, style_images, summarise
from fststyle.errors import UserError
from fststyle.io.decode import load_image
from fststyle.io.grids import labelled_grid
from fststyle.losses import PerceptualLoss
from fststyle.nets.transformer import TransformerNet
from fststyle.style_model import StyleModel

REPO = Path(__file__).resolve().parents[1]
#: a small real training loss: Caffe VGG-19 (offline), one content and two style layers
LOSS = {"network": {"arch": "vgg19", "weights": "caffe"}, "content_layers": {"relu2_2": 1.0},
        "style_layers": {"relu1_2": 1.0, "relu2_2": 1.0}, "content_weight": 1.0, "style_weight": 1e4,
        "tv_weight": 1e-4}
STYLE_SIZE = 32
IMAGE_SIZE = 48
#: few, cheap optimisation steps on the offline VGG (overrides of conf/engine/{gatys,mrf}.yaml)
SLOW_OVERRIDES = ["gatys.steps=1", "mrf.steps=1", "mrf.pyramid_levels=1"]


def tiny_model(path: Path, metadata: dict | None = None, style_size: int = STYLE_SIZE) -> Path:
    """A real (random-weight) style model file with the training loss and the style image it stores."""
    torch.manual_seed(0)
    net = TransformerNet(width=0.25, residual_blocks=1)
    info = {"style": {"name": "starry_night", "paths": [], "blend": None, "size": STYLE_SIZE},
            "loss": LOSS, "image_size": IMAGE_SIZE, "steps": 0} if metadata is None else metadata
    style = load_image(bundled_path("data/styles/starry_night.jpg"), style_size)
    return StyleModel(net, info, [style]).save(path)


def photo_folder(tmp_path: Path, count: int = 2) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for source in sorted((bundled_path("data/preview")).glob("*.jpg"))[:count]:
        shutil.copy(source, folder / source.name)
    return folder


@pytest.fixture(scope="module")
def comparison(compose, tmp_path_factory):
    """One real comparison of two photos with fast, gatys and mrf; returns (output folder, report, exit code)."""
    tmp = tmp_path_factory.mktemp("cmp")
    model = tiny_model(tmp / "starry.safetensors")
    photos = photo_folder(tmp)
    cfg = compose("compare", f"model={model}", f"input={photos}", f"output={tmp / 'out'}", "device=cpu",
                          f"image_size={IMAGE_SIZE}", "cell_height=40", *SLOW_OVERRIDES)
    code = jobs.compare(cfg)
    return tmp / "out", json.loads((tmp / "out/report.json").read_text()), code


def test_report_numbers_equal_the_model_loss_on_the_saved_pngs(comparison):
    out, report, code = comparison
    assert code == 0 and not report["failures"] and len(report["photos"]) == 2
    loss = PerceptualLoss.from_config(LOSS)
    loss.set_style(load_image(bundled_path("data/styles/starry_night.jpg"), STYLE_SIZE))
    for row in report["photos"]:
        content = load_image(row["photo"], IMAGE_SIZE)
        assert (row["height"], row["width"]) == content.shape[-2:] and max(content.shape[-2:]) == IMAGE_SIZE
        assert set(row["results"]) == {"fast", "gatys", "mrf"}
        for engine, result in row["results"].items():
            output = load_image(out / result["image"])
            assert output.shape == content.shape, engine
            with torch.no_grad():
                expected = {k: float(v) for k, v in loss(output, content).items()}
            assert result["losses"].keys() == expected.keys()
            for term, value in expected.items():
                assert result["losses"][term] == pytest.approx(value, rel=1e-5), (engine, term)
            assert result["seconds"] > 0 and result["peak_memory_bytes"] is not None


def test_summary_and_markdown_match_the_rows(comparison):
    out, report, _ = comparison
    summary = report["summary"]
    for engine in ("fast", "gatys", "mrf"):
        totals = [row["results"][engine]["losses"]["total"] for row in report["photos"]]
        stats = summary["engines"][engine]["losses"]["total"]
        assert stats["mean"] == pytest.approx(statistics.mean(totals))
        assert stats["std"] == pytest.approx(statistics.stdev(totals))
        assert (stats["min"], stats["max"]) == (min(totals), max(totals))
    for engine in ("gatys", "mrf"):
        slow = sum(row["results"][engine]["seconds"] for row in report["photos"])
        fast = sum(row["results"]["fast"]["seconds"] for row in report["photos"])
        assert summary["speedup_of_fast"][engine] == pytest.approx(slow / fast)
    markdown = (out / "report.md").read_text()
    assert "![overview](overview.png)" in markdown and "| gatys |" in markdown
    assert "strips/000000000030.png" in markdown
    # the settings and the exact command/config that re-run this comparison are recorded
    gatys = report["engine_settings"]["gatys"]
    assert gatys["settings"]["steps"] == 1 and gatys["settings"]["image_size"] == IMAGE_SIZE
    assert gatys["loss"]["style_loss"] == "gram" and report["engine_settings"]["mrf"]["loss"]["style_loss"] == "mrf"
    assert report["provenance"]["config"]["image_size"] == IMAGE_SIZE and report["provenance"]["command"]


def test_strip_and_overview_have_the_expected_cells_and_labels(comparison):
    out, report, _ = comparison
    style = load_image(bundled_path("data/styles/starry_night.jpg"), STYLE_SIZE)
    rows = []
    for row in report["photos"]:
        results = row["results"]
        cells = [load_image(row["photo"], IMAGE_SIZE), style,
                 *(load_image(out / results[e]["image"]) for e in ("fast", "gatys", "mrf"))]
        labels = ["content", "style", *(f"{e} ({results[e]['seconds']:.3g} s)" for e in ("fast", "gatys", "mrf"))]
        strip = Image.open(out / row["strip"])
        expected = labelled_grid([cells], col_labels=labels, cell_height=40)
        assert strip.size == expected.size and strip.height > 40
        assert np.array_equal(np.asarray(strip.convert("RGB")), np.asarray(expected))
        rows.append(cells)
    overview = Image.open(out / "overview.png")
    expected = labelled_grid(rows, col_labels=column_labels(1, ["fast", "gatys", "mrf"]),
                             row_labels=[row["name"] for row in report["photos"]], cell_height=40)
    assert overview.size == expected.size and overview.height > 2 * 40
    assert np.array_equal(np.asarray(overview.convert("RGB")), np.asarray(expected))


def test_style_image_is_resized_to_the_training_style_size(tmp_path):
    model = StyleModel.load(tiny_model(tmp_path / "m.safetensors", style_size=60))
    (image,) = style_images(dataclasses.replace(model, metadata={"style": {"size": STYLE_SIZE}}))
    assert max(image.shape[-2:]) == STYLE_SIZE
    (unchanged,) = style_images(dataclasses.replace(model, metadata={"style": {"size": None}}))
    assert max(unchanged.shape[-2:]) == 60


def test_model_without_loss_metadata_is_refused(tmp_path):
    model = tiny_model(tmp_path / "noloss.safetensors", metadata={"style": {"name": "x"}, "steps": 0})
    with pytest.raises(ComparisonError, match=r"noloss\.safetensors.*no training loss"):
        compare(model, [], tmp_path / "out", engines=["fast"], engine_configs={})


@pytest.mark.parametrize(("engines", "message"), [
    (["fast", "picasso"], "unknown engine 'picasso'.*choose from fast, gatys, mrf"),
    ([], "no engines"),
    (["fast", "fast"], "listed twice"),
    (["gatys"], "engine 'gatys' has no settings"),
])
def test_bad_engine_lists_are_refused_before_any_work(tmp_path, engines, message):
    model = tiny_model(tmp_path / "m.safetensors")
    with pytest.raises(ComparisonError, match=message):
        compare(model, [], tmp_path / "out", engines=engines, engine_configs={})
    assert not (tmp_path / "out").exists()


def test_unreadable_photo_is_named_others_continue_and_exit_status_is_1(compose, tmp_path):
    model = tiny_model(tmp_path / "m.safetensors")
    photos = photo_folder(tmp_path, count=1)
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    cfg = compose("compare", f"model={model}", f"input={photos}", f"output={tmp_path / 'out'}", "device=cpu",
                          "engines=[fast]", f"image_size={IMAGE_SIZE}")
    assert jobs.compare(cfg) == 1
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert [row["name"] for row in report["photos"]] == ["000000000030"]
    (failure,) = report["failures"]
    assert failure["photo"].endswith("broken.jpg") and "cannot read image" in failure["error"]
    assert "broken.jpg" in (tmp_path / "out/report.md").read_text()


def test_missing_model_and_input_are_named(compose, tmp_path):
    photos = photo_folder(tmp_path, count=1)
    with pytest.raises(ComparisonError, match="model not found: .*nope.safetensors"):
        jobs.compare(compose("compare", f"model={tmp_path / 'nope.safetensors'}", f"input={photos}", "engines=[fast]"))
    with pytest.raises(ComparisonError, match="input not found: .*nowhere"):
        jobs.compare(compose("compare", f"model={tmp_path / 'm.safetensors'}", f"input={tmp_path / 'nowhere'}"))


def test_summary_of_hand_made_rows():
    rows = [{"results": {"fast": {"seconds": 1.0, "peak_memory_bytes": 10, "losses": {"total": 4.0}},
                         "gatys": {"seconds": 30.0, "peak_memory_bytes": None, "losses": {"total": 2.0}}}},
            {"results": {"fast": {"seconds": 3.0, "peak_memory_bytes": 30, "losses": {"total": 6.0}}}}]
    summary = summarise(rows, ["fast", "gatys"])
    assert summary["engines"]["fast"]["losses"]["total"] == {"mean": 5.0, "std": statistics.stdev([4.0, 6.0]),
                                                             "min": 4.0, "max": 6.0}
    assert summary["engines"]["fast"]["peak_memory_bytes"] == 30
    assert summary["engines"]["gatys"]["peak_memory_bytes"] is None
    # speed-up only over the photos both engines finished: 30 s / 1 s
    assert summary["speedup_of_fast"] == {"gatys": 30.0}


def test_command_line_through_infer_py_reports_bad_photos_with_exit_status_1(tmp_path):
    model = tiny_model(tmp_path / "m.safetensors")
    photos = photo_folder(tmp_path, count=1)
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    result = subprocess.run(
        [sys.executable, "infer.py", "--config-name", "compare", f"model={model}", f"input={photos}",
         "engines=[fast]", f"output={tmp_path / 'out'}", "image_size=32", "device=cpu"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert (tmp_path / "out/report.json").is_file(), result.stderr
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert report["image_size"] == 32 and len(report["photos"]) == 1 and len(report["failures"]) == 1
    assert "infer.py --config-name compare" in report["provenance"]["command"]
    assert result.returncode == 1


def test_an_engine_failing_on_one_photo_is_reported_and_the_rest_still_runs(compose, tmp_path):
    model = tiny_model(tmp_path / "m.safetensors")
    photos = photo_folder(tmp_path, count=1)
    # a 15:1 panorama: at the comparison's 48 px it is 3 px high, too small for any 3x3 MRF patch; fast copes
    Image.new("RGB", (240, 16), (200, 120, 40)).save(photos / "panorama.jpg")
    cfg = compose("compare", f"model={model}", f"input={photos}", f"output={tmp_path / 'out'}", "device=cpu",
                          "engines=[fast,mrf]", f"image_size={IMAGE_SIZE}", "cell_height=40", *SLOW_OVERRIDES)
    assert jobs.compare(cfg) == 1
    report = json.loads((tmp_path / "out/report.json").read_text())
    rows = {row["name"]: row for row in report["photos"]}
    assert set(rows) == {"000000000030", "panorama"}
    assert set(rows["000000000030"]["results"]["mrf"]) == {"image", "seconds", "peak_memory_bytes", "losses"}
    assert rows["panorama"]["results"]["fast"]["losses"]["total"] > 0
    error = rows["panorama"]["results"]["mrf"]["error"]
    assert error.startswith("PatchSizeError: image_size=48 is too small for the MRF loss: relu3_1 of the 48x3 px")
    assert report["failures"] == [{"photo": str(photos / "panorama.jpg"), "engine": "mrf", "error": error}]
    assert report["summary"]["engines"]["mrf"]["photos"] == 1 and report["summary"]["engines"]["fast"]["photos"] == 2
    assert (tmp_path / "out/strips/panorama.png").is_file() and not (tmp_path / "out/mrf/panorama.png").exists()
    markdown = (tmp_path / "out/report.md").read_text()
    assert "| mrf | **failed**: PatchSizeError: image_size=48 is too small" in markdown
    assert f"- `{photos / 'panorama.jpg'}` (mrf): PatchSizeError" in markdown


def test_style_paths_in_the_metadata_are_never_read(tmp_path):
    torch.manual_seed(0)
    painting = bundled_path("data/styles/starry_night.jpg")
    info = {"style": {"name": "starry_night", "paths": [str(painting)], "size": STYLE_SIZE}, "loss": LOSS,
            "image_size": IMAGE_SIZE, "steps": 0}
    model = StyleModel(TransformerNet(width=0.25, residual_blocks=1), info).save(tmp_path / "nostyle.safetensors")
    with pytest.raises(ComparisonError, match=r"nostyle\.safetensors: the model stores no style image, and compare "
                                              r"never reads the style\.paths .* style=painting\.jpg"):
        compare(model, [], tmp_path / "out", engines=["fast"], engine_configs={})
    # the user may name the style image
    (image,) = style_images(StyleModel.load(model), [painting])
    assert torch.equal(image, load_image(painting, STYLE_SIZE))


def test_a_vgg_weights_file_named_in_the_metadata_is_loaded_only_when_the_user_names_it(tmp_path):
    weights = tmp_path / "vgg19.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, weights)
    loss = {**LOSS, "network": {"arch": "vgg19", "weights": str(weights)}}
    model = tiny_model(tmp_path / "m.safetensors", metadata={"style": {"name": "x"}, "loss": loss, "steps": 0})
    with pytest.raises(ComparisonError, match=r"m\.safetensors: its training loss takes VGG weights from the file "
                                              r"'.*vgg19\.pth' named in its metadata.*set loss_weights="):
        compare(model, [], tmp_path / "out", engines=["fast"], engine_configs={})
    assert not (tmp_path / "out").exists()
    # named by the user, that file is used (and here refused as incomplete), or any named source instead
    with pytest.raises(ComparisonError, match=r"cannot be rebuilt \(VGG weights from .*vgg19\.pth lack"):
        compare(model, [], tmp_path / "out", engines=["fast"], engine_configs={}, loss_weights=str(weights))
    report = compare(model, [], tmp_path / "out", engines=["fast"], engine_configs={}, loss_weights="caffe",
                     progress=False)
    assert report["photos"] == [] and (tmp_path / "out/report.json").is_file()


def test_one_comparison_reads_the_model_file_once(tmp_path, monkeypatch):
    """compare loads one StyleModel and passes it to the fast engine, the scoring loss and the style targets:
    one 12-byte read of the head (image and header-size checks) and one safetensors open, nothing more."""
    import builtins

    from fststyle import style_model

    model = tiny_model(tmp_path / "m.safetensors")
    opened = []
    real_open, real_safe_open = builtins.open, style_model.safe_open

    def counting_open(file, *args, **kwargs):
        if Path(str(file)) == model:
            opened.append("open")
        return real_open(file, *args, **kwargs)

    def counting_safe_open(file, *args, **kwargs):
        if Path(str(file)) == model:
            opened.append("safe_open")
        return real_safe_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(style_model, "safe_open", counting_safe_open)
    photo = sorted((bundled_path("data/preview")).glob("*.jpg"))[0]
    report = compare(model, [photo], tmp_path / "out", engines=["fast"], engine_configs={}, progress=False)
    assert opened == ["open", "safe_open"]
    assert not report["failures"] and report["photos"][0]["results"]["fast"]["losses"]["total"] > 0


def test_compare_paths_is_the_whole_job_from_python(tmp_path):
    """No CLI and no Hydra: the library call checks the inputs, runs the engines and writes the reports."""
    from fststyle.compare.job import compare_paths

    model = tiny_model(tmp_path / "starry.safetensors")
    photos = photo_folder(tmp_path, count=1)
    with pytest.raises(UserError, match="overwrite"):  # the output folder is an input: refused before loading
        compare_paths(model, photos, photos, engines="fast", engine_configs={})
    with pytest.raises(ComparisonError, match="unknown engine 'slow'"):
        compare_paths(model, photos, tmp_path / "out", engines=["fast", "slow"], engine_configs={})
    assert not (tmp_path / "out").exists()
    report = compare_paths(model, photos, tmp_path / "out", engines="fast", engine_configs={},
                           config={"asked": "from python"}, device="cpu", image_size=IMAGE_SIZE, cell_height=40,
                           progress=False)
    assert report["failures"] == [] and [row["name"] for row in report["photos"]] == [
        next(photos.iterdir()).stem]
    assert report["provenance"]["config"] == {"asked": "from python"} and report["engines"] == ["fast"]
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == json.loads(json.dumps(report))
    assert (tmp_path / "out" / "report.md").is_file() and (tmp_path / "out" / "fast").is_dir()
