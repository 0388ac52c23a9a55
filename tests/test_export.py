"""Portable exports match PyTorch: ONNX (dynamic N, H, W) and TorchScript at sizes other than the trace's."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fststyle.errors import UserError
from fststyle.nets.transformer import TransformerNet
from fststyle.style_model import StyleModel
from fststyle.stylize.export import export_model

#: float32 on CPU: same operations in a different order (onnxruntime's kernels vs oneDNN); observed max ~2e-6
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TransformerNet]:
    torch.manual_seed(0)
    network = TransformerNet(width=0.25, residual_blocks=2).eval()
    path = StyleModel(network, {"style": {"name": "t"}}).save(tmp_path_factory.mktemp("export") / "tiny.safetensors")
    return path, network


def _reference(network: TransformerNet, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return network(images).numpy()


@pytest.mark.parametrize("kind", ["nearest", "transposed"])
def test_the_exported_forward_is_the_transformer_forward(kind: str) -> None:
    network = TransformerNet(width=0.25, residual_blocks=1, upsample=kind).eval()
    scripted = torch.jit.script(network)  # the network itself, no export-only copy of its forward
    for shape in [(1, 3, 1, 1), (1, 3, 3, 5), (2, 3, 37, 61), (1, 3, 64, 48)]:
        images = torch.rand(shape)
        with torch.no_grad():
            assert torch.equal(scripted(images), network(images))


def test_onnx_matches_pytorch_at_dynamic_sizes(model: tuple[Path, TransformerNet], tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    path, network = model
    onnx_path = export_model(path, "onnx", tmp_path / "tiny.onnx")
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]  # a one-style model takes no style weights
    for shape in [(1, 3, 64, 48), (2, 3, 37, 61), (1, 3, 8, 8)]:  # the export traced 2x3x67x61
        images = torch.rand(shape)
        (out,) = session.run(None, {"images": images.numpy()})
        assert out.shape == shape
        np.testing.assert_allclose(out, _reference(network, images), atol=TOLERANCE, rtol=0)


def test_torchscript_matches_pytorch_at_any_size(model: tuple[Path, TransformerNet], tmp_path: Path) -> None:
    path, network = model
    scripted = torch.jit.load(str(export_model(path, "torchscript", tmp_path / "tiny.pt")))
    for shape in [(1, 3, 64, 48), (2, 3, 37, 61), (1, 3, 3, 5)]:
        images = torch.rand(shape)
        with torch.no_grad():
            np.testing.assert_allclose(scripted(images).numpy(), _reference(network, images), atol=TOLERANCE, rtol=0)


def test_safetensors_from_training_checkpoint(model: tuple[Path, TransformerNet], tmp_path: Path) -> None:
    _, network = model
    checkpoint = tmp_path / "run.ckpt"
    torch.save({"state_dict": {f"transformer.{k}": v for k, v in network.state_dict().items()},
                "hyper_parameters": {"transformer": network.config.to_dict(), "style": {"name": "t"}},
                "global_step": 7}, checkpoint)
    written = export_model(checkpoint, "safetensors")
    assert written == tmp_path / "run.safetensors"
    loaded = StyleModel.load(written)
    assert loaded.metadata["steps"] == 7 and loaded.metadata["style"] == {"name": "t"}
    images = torch.rand(1, 3, 21, 30)
    np.testing.assert_allclose(_reference(loaded.network, images), _reference(network, images), atol=1e-6, rtol=0)


def test_export_refuses_bad_requests(model: tuple[Path, TransformerNet]) -> None:
    path, _ = model
    with pytest.raises(ValueError, match="not a format"):
        export_model(path, "tflite")
    with pytest.raises(ValueError, match="already a style model"):
        export_model(path, "safetensors", path.with_name("copy.safetensors"))
    with pytest.raises(ValueError, match="overwrite"):
        export_model(path, "onnx", path)


def test_onnx_export_without_the_extra_names_the_install_command(model: tuple[Path, TransformerNet],
                                                                 tmp_path: Path, monkeypatch) -> None:
    path, _ = model
    for name in ("onnx", "onnxscript", "onnxruntime"):
        monkeypatch.setitem(sys.modules, name, None)  # `import onnx` now raises ImportError, as when not installed
    with pytest.raises(UserError, match=re.escape('format=onnx needs onnx and onnxscript, which are not installed: '
                                                  'pip install "fststyle[onnx]"')):
        export_model(path, "onnx", tmp_path / "tiny.onnx")
    assert not (tmp_path / "tiny.onnx").exists()
