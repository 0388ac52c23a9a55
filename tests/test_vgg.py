import pytest
import torch

from fststyle.nets.vgg import VGGFeatures, WeightsUnavailableError, layer_names


def test_layer_names_follow_the_papers():
    names = layer_names("vgg16")
    assert names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert "relu4_3" in names and "relu4_4" not in names
    assert "relu5_4" in layer_names("vgg19")
    assert len([n for n in layer_names("vgg19") if n.startswith("conv")]) == 16


def test_returns_only_requested_layers_and_stops_at_the_deepest():
    vgg = VGGFeatures("vgg16", weights="random", layers=["relu3_3"])
    assert vgg.names[-1] == "relu3_3"
    feats = vgg(torch.rand(2, 3, 32, 40), ["relu1_2", "conv2_1", "pool2", "relu3_3"])
    assert set(feats) == {"relu1_2", "conv2_1", "pool2", "relu3_3"}
    assert feats["relu1_2"].shape == (2, 64, 32, 40)
    assert feats["pool2"].shape == (2, 128, 8, 10)
    assert feats["relu3_3"].shape == (2, 256, 8, 10)
    assert (feats["conv2_1"] < 0).any(), "conv outputs must not be overwritten by an in-place ReLU"


def test_unknown_layer_names_the_valid_ones():
    with pytest.raises(ValueError, match="relu2_2"):
        VGGFeatures("vgg16", weights="random", layers=["relu9_9"])


def test_frozen_and_always_in_eval_mode():
    vgg = VGGFeatures("vgg19", weights="random", pooling="avg", layers=["relu2_1"])
    vgg.train()
    assert not vgg.training and not any(m.training for m in vgg.modules())
    assert not any(p.requires_grad for p in vgg.parameters())
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    vgg(x, ["relu2_1"])["relu2_1"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in vgg.parameters())
    assert isinstance(vgg.body[4], torch.nn.AvgPool2d)


def test_caffe_weights_are_real_vgg19():
    vgg = VGGFeatures("vgg19", weights="caffe", layers=["relu1_1"])
    first = vgg.body[0].weight
    assert first.shape == (64, 3, 3, 3)
    # The released VGG-19 conv1_1: mean bias ~0.5, weights |w| ~0.2 (not an init distribution).
    assert 0.05 < first.abs().mean() < 0.5
    # Preprocessing: mid-grey RGB (0.5) becomes Caffe BGR 0-255 minus the mean pixel.
    x = vgg.preprocess(torch.full((1, 3, 1, 1), 0.5))
    assert torch.allclose(x.flatten(), torch.tensor([127.5 - 103.939, 127.5 - 116.779, 127.5 - 123.68]), atol=1e-3)


def test_caffe_weights_only_exist_for_vgg19():
    with pytest.raises(WeightsUnavailableError, match="vgg19"):
        VGGFeatures("vgg16", weights="caffe")


def test_offline_without_cached_weights_names_the_three_ways(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("FSTSTYLE_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as error:
        VGGFeatures("vgg16", weights="torchvision", layers=["relu2_2"])
    message = str(error.value)
    assert "loss.network.weights=/path/to" in message
    assert "weights=torchvision" in message
    assert "weights=caffe" in message


def test_torchvision_weights_come_from_the_hub_cache(tmp_path, monkeypatch):
    from torchvision.models import vgg16

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("FSTSTYLE_OFFLINE", "1")
    reference = vgg16()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth")
    vgg = VGGFeatures("vgg16", weights="torchvision", layers=["relu2_2"])
    assert torch.equal(vgg.body[2].weight, reference.features[2].weight)


def test_explicit_file_and_bad_file(tmp_path):
    from torchvision.models import vgg16

    reference = vgg16()
    path = tmp_path / "vgg16.pth"
    torch.save(reference.state_dict(), path)
    vgg = VGGFeatures("vgg16", weights=str(path), layers=["relu1_2"])
    assert torch.equal(vgg.body[0].weight, reference.features[0].weight)
    with pytest.raises(WeightsUnavailableError, match="not found"):
        VGGFeatures("vgg16", weights=str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="junk.pth"):
        VGGFeatures("vgg16", weights=str(tmp_path / "junk.pth"))
