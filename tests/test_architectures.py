"""The literature's architectures (VGG9, VGG11, ResNet-18 for 3x32x32 images): their
layouts against closed forms, the ideal crossbars reproducing them exactly, the residual
block's neurons found by data flow, and a study run on weights from a file."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import xarray as xr
from click.testing import CliRunner

import xbar
from studies.cli import main
from studies.ann_to_snn import Residual, Scaled, SpikingResidual, build_ann, convert_ann
from studies.data import load_dataset
from studies.models import BasicBlock, build, set_spiking_thresholds
from studies.train import load_weights

CIFAR = (3, 32, 32)


def _synthetic(n, seed, shape=CIFAR):
    """Images of CIFAR's shape, nothing downloaded: uniform pixels, random labels."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)


def _conv_params(c_in, c_out, k=3):
    return k * k * c_in * c_out + 2 * c_out  # no conv bias; BatchNorm's weight and bias


def test_vgg9_is_spikesims_layout():
    """conv 64-64-pool-128-128-pool-256-256-256-pool, fc 1024, fc 10: its parameter count
    in closed form, and the shapes through it."""
    expected = sum(_conv_params(a, b) for a, b in zip([3, 64, 64, 128, 128, 256, 256], [64, 64, 128, 128, 256, 256, 256]))
    expected += (256 * 4 * 4 * 1024 + 1024) + (1024 * 10 + 10)
    model = build("vgg9", CIFAR, 10)
    assert sum(p.numel() for p in model.parameters()) == expected
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256]
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [1024, 10]


def test_resnet18_has_the_cifar_layout():
    """One 3x3 stem, four stages of two basic blocks, 1x1 shortcuts where the shape changes
    (three of them), 11.17 M parameters as the CIFAR ResNet-18 has."""
    model = build("resnet18", CIFAR, 10)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert [b.conv2.out_channels for b in blocks] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert sum(len(b.shortcut) > 0 for b in blocks) == 3
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 20
    assert sum(p.numel() for p in model.parameters()) == 11_173_962


@pytest.mark.parametrize("arch, shape", [("vgg11", (1, 28, 28)), ("vgg9", (1, 28, 28)), ("resnet18", (1, 28, 28))])
def test_the_architectures_fit_the_embedded_images(arch, shape):
    model = build(arch, shape, 10).eval()
    xbar.reset_state(model)
    with torch.no_grad():
        assert model(torch.rand(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize("arch", ["vgg9", "vgg11", "resnet18"])
def test_ideal_crossbars_run_the_architecture_exactly(arch):
    """Spec.ideal() on 64x64 tiles: every spike of every layer as the network's own (the
    thresholds set so that every layer fires, a quarter of its neurons per step), the
    membranes to float rounding, the same accuracy at every step.  In float64: in float32
    the tiles' partial sums, added in another order, move a membrane by a rounding, which
    flips the odd spike near threshold, and eleven layers deep that grows to a few percent
    of VGG11's spikes (measured: 1.5e-5 of layer 4's, 4% of layer 8's)."""
    torch.manual_seed(0)
    model = build(arch, CIFAR, 10).double().eval()
    x, y = _synthetic(4, 2)
    set_spiking_thresholds(model, _synthetic(4, 1)[0].double(), 2)
    hw = xbar.convert(model, xbar.Spec.ideal())
    ds = xbar.simulate(hw, model, (x.double(), y), 2, progress=False)
    rates = ds.spike_rate_ideal.values[-1]
    assert np.all(rates[np.isfinite(rates)] > 0.05)
    assert float(np.nanmax(ds.spike_mismatch.values)) == 0.0
    assert float(np.nanmax(ds.membrane_error.values)) < 1e-12
    np.testing.assert_array_equal(ds.accuracy.values[0], ds.accuracy_ideal.values)


def test_a_residual_blocks_convolutions_feed_its_second_neuron():
    """conv2 and the shortcut's 1x1 convolution both feed lif2: the shortcut, a crossbar
    layer, runs between conv2 and lif2 (matched by data flow, not by order)."""
    model = build("resnet18", CIFAR, 10).eval()
    hw = xbar.convert(model, xbar.Spec.ideal())
    ds = xbar.simulate(hw, model, _synthetic(2, 3), 1, progress=False)
    neuron = dict(zip(ds.layer.values, ds.neuron.values))
    assert neuron["3.conv1"] == "3.lif1" and neuron["3.conv2"] == "3.lif2"
    assert neuron["5.conv2"] == "5.lif2" and neuron["5.shortcut.0"] == "5.lif2"


def test_weights_from_a_file_are_loaded_or_refused_by_key(tmp_path, digits_mlp):
    model, _, data, _ = digits_mlp
    path = tmp_path / "mlp.pt"
    torch.save(model.state_dict(), path)
    loaded, info = load_weights("mlp", path, data, 4)
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    assert len(info["config"]["sha256"]) == 64 and 0.5 < info["test_accuracy"] <= 1
    torch.save({"state_dict": model.state_dict()}, tmp_path / "checkpoint.pt")
    assert load_weights("mlp", tmp_path / "checkpoint.pt", data, 4)[1]["config"]["sha256"] != info["config"]["sha256"]
    with pytest.raises(ValueError, match=r"does not fit the conv SNN layout .* it lacks \['0.bias', '0.weight'"):
        load_weights("conv", path, data, 4)
    with pytest.raises(ValueError, match="no such file"):
        load_weights("mlp", tmp_path / "none.pt", data, 4)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="is not a torch state_dict file"):
        load_weights("mlp", tmp_path / "junk.pt", data, 4)


def test_study_runs_on_weights_from_a_file_and_records_them(tmp_path, digits_mlp):
    model, info, _, _ = digits_mlp
    path = tmp_path / "mlp.pt"
    torch.save(model.state_dict(), path)
    out = tmp_path / "res"
    result = CliRunner().invoke(main, ["study", "--out", str(out), "--dataset", "digits", "--arch", "mlp",
                                       "--trials", "1", "--timesteps", "3", "--n-test", "60", "--weights",
                                       str(path)])
    assert result.exit_code == 0, result.output
    ds = xr.open_dataset(out / "robustness.nc")
    assert ds.attrs["study_weights"] == str(path)
    assert '"sha256"' in ds.attrs["train_config"]
    refused = CliRunner().invoke(main, ["study", "--out", str(tmp_path / "never"), "--dataset", "digits",
                                        "--arch", "conv", "--weights", str(path)])
    assert refused.exit_code != 0 and "does not fit the conv SNN layout" in refused.output


def _weights(model):
    return [tuple(m.weight.shape) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.mark.parametrize("arch", ["vgg9", "vgg11", "resnet18"])
def test_the_anns_to_convert_have_the_surrogate_networks_layouts(arch):
    """build_ann(arch) holds the convolutions and linear layers of build(arch), in the same
    order and shapes, and as many parameters (the LIFs and ReLUs have none); ResNet-18's
    three projection shortcuts and five identity ones."""
    ann, snn = build_ann(arch, CIFAR, 10), build(arch, CIFAR, 10)
    assert _weights(ann) == _weights(snn)
    assert sum(p.numel() for p in ann.parameters()) == sum(p.numel() for p in snn.parameters())
    blocks = [m for m in ann.modules() if isinstance(m, Residual)]
    assert [b.shortcut is not None for b in blocks] == ([False, False, True, False, True, False, True, False]
                                                        if arch == "resnet18" else [])


def test_a_converted_projection_block_reads_its_anns_currents():
    """A basic block with a projection shortcut, converted: input spikes ``s`` stand for
    ``theta_in * s``, so its two crossbar layers that read them, the body's first 3x3
    convolution and the 1x1 shortcut (each with its BatchNorm folded), give the ANN's
    pre-activations on ``theta_in * s``, to float rounding; an identity shortcut becomes
    ``Scaled(theta_in)``."""
    torch.manual_seed(0)
    ann = build_ann("resnet18", (3, 16, 16), 10).double()
    x = _synthetic(16, 5, (3, 16, 16))[0].double()
    ann.train()
    ann(x)  # BatchNorm statistics that are not the identity's
    ann.eval()
    snn = convert_ann(ann, x)
    blocks = [m for m in snn.modules() if isinstance(m, SpikingResidual)]
    assert [type(b.shortcut).__name__ for b in blocks] == ["Scaled", "Scaled", "Sequential", "Scaled",
                                                            "Sequential", "Scaled", "Sequential", "Scaled"]
    assert [type(m).__name__ for m in blocks[2].shortcut] == ["Conv2d"]  # the 1x1 conv, its BatchNorm folded
    theta_in = blocks[1].neuron.threshold  # the input of the third block: the second's spikes
    assert blocks[1].shortcut.factor == blocks[0].neuron.threshold
    block, twin = blocks[2], [m for m in ann.modules() if isinstance(m, Residual)][2]
    s = (torch.rand(4, 64, 16, 16, generator=torch.Generator().manual_seed(6)) < 0.3).double()
    with torch.no_grad():
        torch.testing.assert_close(block.shortcut(s), twin.shortcut(theta_in * s), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(block.body[0](s), twin.body[1](twin.body[0](theta_in * s)), rtol=1e-10,
                                   atol=1e-12)


@pytest.mark.parametrize("arch", ["vgg9", "resnet18"])
def test_ideal_crossbars_run_the_converted_architecture_exactly(arch):
    """The converted network (integrate-and-fire, thresholds from the ANN's activations,
    digital shortcuts and BatchNorms) on Spec.ideal(): every spike as the network's own,
    the membranes to float rounding, the same accuracy at every step (float64)."""
    torch.manual_seed(1)
    ann = build_ann(arch, CIFAR, 10).double().eval()
    snn = convert_ann(ann, _synthetic(8, 1)[0].double())
    x, y = _synthetic(4, 2)
    hw = xbar.convert(snn, xbar.Spec.ideal())
    ds = xbar.simulate(hw, snn, (x.double(), y), 3, progress=False)
    rates = ds.spike_rate_ideal.values[-1]
    assert np.nanmean(rates) > 0.01  # the layers spike
    assert float(np.nanmax(ds.spike_mismatch.values)) == 0.0
    assert float(np.nanmax(ds.membrane_error.values)) < 1e-12
    np.testing.assert_array_equal(ds.accuracy.values[0], ds.accuracy_ideal.values)


def test_study_converts_an_ann_from_a_file(tmp_path):
    """--converted: the weights file is a ReLU ANN of build_ann's layout, converted; the
    dataset records it; an SNN's file is refused with the ANN's keys it lacks, and
    --converted without --weights is refused."""
    data = load_dataset("digits")
    torch.manual_seed(0)
    path = tmp_path / "ann.pt"
    torch.save(build_ann("conv", data.image_shape, data.n_classes).state_dict(), path)
    out = tmp_path / "res"
    args = ["study", "--dataset", "digits", "--arch", "conv", "--trials", "1", "--timesteps", "3", "--n-test", "40"]
    result = CliRunner().invoke(main, [*args, "--out", str(out), "--weights", str(path), "--converted"])
    assert result.exit_code == 0, result.output
    ds = xr.open_dataset(out / "robustness.nc")
    assert ds.attrs["study_converted"] == 1 and '"converted": true' in ds.attrs["train_config"]
    assert float(np.nanmax(ds.spike_rate_ideal.values)) > 0  # an IF network that spikes
    snn_file = tmp_path / "snn.pt"
    torch.save(build("mlp", data.image_shape, data.n_classes).state_dict(), snn_file)
    refused = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "n1"), "--weights", str(snn_file),
                                        "--converted"])
    assert refused.exit_code != 0 and "does not fit the conv ANN layout" in refused.output
    alone = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "n2"), "--converted"])
    assert alone.exit_code != 0 and "converted = True is not allowed without weights" in alone.output
