import json

import pytest
import torch

from fststyle.export import (
    ModelFileError,
    load_style_model,
    read_metadata,
    read_style_image,
    save_style_model,
)
from fststyle.transformer import TransformerNet


def test_round_trip_is_bit_identical(tmp_path):
    torch.manual_seed(0)
    net = TransformerNet(width=0.25, residual_blocks=2, norm="batch").eval()
    style = torch.rand(1, 3, 10, 12).transpose(-1, -2)  # non-contiguous, as a cropped/resized image can be
    path = save_style_model(net, tmp_path / "m.safetensors", {"style": {"name": "x"}, "steps": 7}, style_image=style)
    loaded, info = load_style_model(path)
    assert torch.allclose(read_style_image(path), style, atol=1 / 255)
    x = torch.rand(2, 3, 30, 22)
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))
    assert info["steps"] == 7 and info["transformer"]["norm"] == "batch"
    assert read_metadata(path)["style"] == {"name": "x"}


def test_not_a_model_gets_a_clear_error(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="junk.safetensors"):
        load_style_model(junk)
    with pytest.raises(ModelFileError, match="not found"):
        load_style_model(tmp_path / "missing.safetensors")


def test_truncated_and_wrong_architecture(tmp_path):
    net = TransformerNet(width=0.25, residual_blocks=1)
    path = save_style_model(net, tmp_path / "m.safetensors", {})
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="cut.safetensors"):
        load_style_model(tmp_path / "cut.safetensors")
    # metadata claiming another architecture than the stored weights
    from safetensors.torch import load_file, save_file

    info = read_metadata(path)
    info["transformer"]["residual_blocks"] = 3
    save_file(load_file(str(path)), str(tmp_path / "wrong.safetensors"), metadata={"fststyle": json.dumps(info)})
    with pytest.raises(ModelFileError, match="do not match"):
        load_style_model(tmp_path / "wrong.safetensors")


def test_pickle_carrying_code_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Evil()}, path)
    with pytest.raises(ModelFileError, match="never run"):
        load_style_model(path)
    assert not marker.exists()
