import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from fststyle.bundled import shipped_models
from fststyle.model_header import read_model_header, style_names
from fststyle.nets.transformer import TransformerNet
from fststyle.style_model import ModelFileError, StyleModel


def read_header(path: Path) -> dict:
    """The fststyle JSON of a style model's header as save writes it (with "format" and "transformer")."""
    with safe_open(str(path), framework="pt") as handle:
        return json.loads(handle.metadata()["fststyle"])


@pytest.mark.parametrize("norm", ["batch", "demodulated"])
def test_round_trip_is_bit_identical(tmp_path, norm):
    torch.manual_seed(0)
    net = TransformerNet(width=0.25, residual_blocks=2, norm=norm).eval()
    style = torch.rand(1, 3, 10, 12).transpose(-1, -2)  # non-contiguous, as a cropped/resized image can be
    path = StyleModel(net, {"style": {"name": "x"}, "steps": 7}, [style]).save(tmp_path / "m.safetensors")
    loaded = StyleModel.load(path)
    assert len(loaded.style_images) == 1 and torch.allclose(loaded.style_images[0], style, atol=1 / 255)
    x = torch.rand(2, 3, 30, 22)
    with torch.no_grad():
        assert torch.equal(net(x), loaded.network(x))
    assert loaded.metadata["steps"] == 7 and loaded.network.config.norm == norm
    assert loaded.metadata["style"] == {"name": "x"}


def test_a_saved_model_gets_the_umask_mode_like_every_other_output(tmp_path):
    previous = os.umask(0o022)
    try:
        path = StyleModel(TransformerNet(width=0.25, residual_blocks=1), {}, None).save(tmp_path / "m.safetensors")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644  # safetensors' own save_file writes 0600: unreadable to others


def test_not_a_model_gets_a_clear_error(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="junk.safetensors"):
        StyleModel.load(junk)
    with pytest.raises(ModelFileError, match="not found"):
        StyleModel.load(tmp_path / "missing.safetensors")


def test_truncated_and_wrong_architecture(tmp_path):
    net = TransformerNet(width=0.25, residual_blocks=1)
    path = StyleModel(net, {}).save(tmp_path / "m.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="cut.safetensors"):
        StyleModel.load(tmp_path / "cut.safetensors")
    # metadata claiming another architecture than the stored weights
    from safetensors.torch import load_file, save_file

    info = read_header(path)
    info["transformer"]["residual_blocks"] = 3
    save_file(load_file(str(path)), str(tmp_path / "wrong.safetensors"), metadata={"fststyle": json.dumps(info)})
    with pytest.raises(ModelFileError, match="do not match"):
        StyleModel.load(tmp_path / "wrong.safetensors")


def test_pickle_carrying_code_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Evil()}, path)
    with pytest.raises(ModelFileError, match="never run"):
        StyleModel.load(path)
    assert not marker.exists()



#: Loads each model path given on the command line in a fresh process under an address-space guard (so the old,
#: build-first code fails here instead of filling the machine) and prints, as JSON, each refusal's message and
#: seconds, and the peak resident set above the baseline after importing fststyle.
_REFUSAL_PROBE = """
import json, resource, sys, time
from fststyle.bundled import shipped_models
from fststyle.model_header import read_model_header, style_names
from fststyle.style_model import ModelFileError, StyleModel

def status_kb(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))

resource.setrlimit(resource.RLIMIT_AS, ((status_kb("VmSize") + 2 * 2**20) * 1024, resource.RLIM_INFINITY))
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
results = []
for path in sys.argv[1:]:
    start = time.perf_counter()
    try:
        StyleModel.load(path)
        message = None
    except ModelFileError as error:
        message = str(error)
    results.append({"message": message, "seconds": time.perf_counter() - start})
peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) * 1024
print(json.dumps({"results": results, "peak_bytes_above_baseline": peak}))
"""


def _with_transformer(path: Path, out: Path, **changes) -> Path:
    """A copy of the style model ``path`` (same tensors) whose metadata claims other transformer settings."""
    from safetensors.torch import load_file, save_file

    info = read_header(path)
    info["transformer"].update(changes)
    save_file(load_file(str(path)), str(out), metadata={"fststyle": json.dumps(info)})
    return out


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the address space size from Linux /proc")
def test_giant_metadata_is_refused_in_well_under_a_second_and_little_memory(repo, tmp_path):
    small = StyleModel(TransformerNet(width=0.25, residual_blocks=1), {}).save(tmp_path / "small.safetensors")
    # beyond the bounds (the example), and the largest network within them (64 blocks of 1024 channels,
    # 4.8 GB of weights) over the same few tiny tensors: the second is refused only by the shape check
    giant = _with_transformer(small, tmp_path / "giant.safetensors", residual_blocks=100_000)
    widest = _with_transformer(small, tmp_path / "widest.safetensors", residual_blocks=64, base_channels=256, width=1.0)
    checkpoint = tmp_path / "widest.ckpt"
    torch.save({"state_dict": {f"transformer.{k}": v for k, v in TransformerNet(width=0.25).state_dict().items()},
                "hyper_parameters": {"transformer": read_header(widest)["transformer"]}}, checkpoint)
    probe = subprocess.run([sys.executable, "-c", _REFUSAL_PROBE, str(giant), str(widest), str(checkpoint)],
                           cwd=repo, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert probe.returncode == 0, probe.stderr[-2000:]
    measured = json.loads(probe.stdout.splitlines()[-1])
    giant_result, widest_result, checkpoint_result = measured["results"]
    assert "residual_blocks must be in 0..64, got 100000" in giant_result["message"]
    for result in (widest_result, checkpoint_result):
        assert "weights do not match the fststyle transformer its metadata describes" in result["message"]
        assert "missing" in result["message"] and "\n" not in result["message"]
    # measured: about 0.01 s each and well under 10 MB on the 2-core CI machine; the bounds are loose for load
    assert max(r["seconds"] for r in measured["results"]) < 2.0
    assert measured["peak_bytes_above_baseline"] < 2**30


def _with_metadata(path: Path, out: Path, raw: str) -> Path:
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(path)), str(out), metadata={"fststyle": raw})
    return out


@pytest.mark.parametrize(("change", "message"), [
    ({"transformer": {"width": True}}, "transformer.width is True, not float"),
    ({"transformer": {"norm": ["instance"]}}, "transformer.norm is"),
    ({"transformer": {"width": float("inf")}}, "width must be a finite number"),
    ({"transformer": {"shape": "giant"}}, "unknown transformer setting 'shape'"),
    ({"image_size": 10**9}, "image_size is 1000000000, not a side in 1..4096 px"),
    ({"style": {"size": "256"}}, "style.size is '256'"),
    ({"style": ["starry"]}, "'style' is list, not an object"),
    ({"steps": -1}, "steps is -1"),
])
def test_metadata_fields_are_type_and_bound_checked(tmp_path, change, message):
    path = StyleModel(TransformerNet(width=0.25, residual_blocks=1),
                      {"style": {"name": "x"}, "image_size": 256, "steps": 3}).save(tmp_path / "m.safetensors")
    info = read_header(path)
    for key, value in change.items():
        info[key] = {**info[key], **value} if key == "transformer" else value
    bad = _with_metadata(path, tmp_path / "bad.safetensors", json.dumps(info))
    with pytest.raises(ModelFileError, match=re.escape(message)):
        StyleModel.load(bad)


@pytest.mark.parametrize("read", [StyleModel.load, read_model_header], ids=["load", "header only"])
def test_oversized_or_unparseable_metadata_is_refused(tmp_path, read):
    path = StyleModel(TransformerNet(width=0.25, residual_blocks=1), {}).save(tmp_path / "m.safetensors")
    info = read_header(path)
    padded = _with_metadata(path, tmp_path / "padded.safetensors", json.dumps({**info, "notes": "x" * 3 * 2**20}))
    with pytest.raises(ModelFileError, match="header is missing or claims .* bytes, more than 2097152"):
        read(padded)
    nested = _with_metadata(path, tmp_path / "nested.safetensors", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelFileError, match="metadata is not valid JSON"):
        read(nested)
    with pytest.raises(ModelFileError, match="a JSON list instead of an object"):
        read(_with_metadata(path, tmp_path / "list.safetensors", "[1, 2]"))


@pytest.mark.parametrize("name", sorted(shipped_models()))
def test_the_header_alone_gives_what_loading_gives(name):
    """fststyle models reads only the header: the same architecture, metadata and style names as a full load."""
    path = shipped_models()[name]
    model = StyleModel.load(path)
    transformer, metadata = read_model_header(path)
    assert transformer == model.network.config.to_dict() and metadata == model.metadata
    assert style_names(transformer.get("styles", 1), metadata, path) == model.style_names


@pytest.mark.parametrize("name", ["photo.jpg", "photo.safetensors"])
def test_an_image_passed_as_the_model_is_named_as_one(tmp_path, name):
    from PIL import Image

    photo = tmp_path / name
    Image.new("RGB", (8, 8), "red").save(photo, format="JPEG")
    expected = ("this is an image, not a style model: model= takes a .safetensors style model "
                "(e.g. checkpoints/starry_night.safetensors); pass the photo as input=")
    with pytest.raises(ModelFileError, match=re.escape(expected)):
        StyleModel.load(photo)


def test_checkpoint_hyper_parameters_are_checked_against_its_weights(tmp_path):
    state = {f"transformer.{k}": v for k, v in TransformerNet(width=0.25, residual_blocks=1).state_dict().items()}
    checkpoint = tmp_path / "run.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"transformer": {"width": 0.25, "residual_blocks": 2}}},
               checkpoint)
    with pytest.raises(ModelFileError, match=r"run\.ckpt: weights do not match .* 8 tensors missing"):
        StyleModel.load(checkpoint)
    torch.save({"state_dict": state, "hyper_parameters": {"transformer": {"width": "wide"}}}, checkpoint)
    with pytest.raises(ModelFileError, match="transformer.width is 'wide', not float"):
        StyleModel.load(checkpoint)
