"""ANN-to-SNN conversion: accuracy against the ANN, timesteps, residual and BatchNorm."""

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

import xbar
from studies.ann_to_snn import (ChannelAffine, ConversionConfig, SpikingResidual, build_ann,
                                convert_ann, train_ann)
from studies.data import load_dataset
from studies.train import evaluate
from test_simulate import _assert_ideal_equivalence


def _acc(snn, data, t):
    return evaluate(snn, data.x_test, data.y_test, t)


def test_converted_snn_reaches_its_ann_and_rises_with_timesteps(converted_mlp, mnist_data):
    snn, ann, info = converted_mlp
    acc = {t: _acc(snn, mnist_data, t) for t in (2, 16, 64)}
    assert acc[2] < acc[16], acc
    assert acc[64] >= info["ann_test_accuracy"] - 0.02, (acc, info["ann_test_accuracy"])
    assert info["ann_test_accuracy"] > 0.9


def test_conversion_aware_snn_within_one_point_at_8_steps_with_4_bit_weights(converted_mlp_qcfs,
                                                                             mnist_data):
    snn, ann, info = converted_mlp_qcfs
    assert info["snn_timesteps"] == 8
    assert info["snn_test_accuracy"] >= info["ann_test_accuracy"] - 0.01, info
    for layer in (m for m in snn.modules() if isinstance(m, nn.Linear)):
        assert len(torch.unique(layer.weight)) <= 15  # 4-bit signed weights, one scale per layer


def test_converted_and_surrogate_nets_pass_the_ideal_equivalence_check(converted_mlp, mnist_data):
    snn = copy.deepcopy(converted_mlp[0]).double()
    hw = xbar.convert(snn, xbar.Spec.ideal(tile=(64, 64)), trials=2)
    data = (mnist_data.x_test[:100].double(), mnist_data.y_test[:100])
    ds = xbar.simulate(hw, snn, data, 16, progress=False)
    _assert_ideal_equivalence(ds)


def _random_bn(model, seed):
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model.eval()


def test_residual_net_with_batchnorm_converts_and_simulates_ideally():
    data = load_dataset("digits")
    config = ConversionConfig(dataset="digits", arch="resnet", epochs=8, lr=3e-3)
    ann = train_ann(config, data, progress=False)
    snn = convert_ann(ann, data.x_train[:500])
    assert any(isinstance(m, SpikingResidual) for m in snn.modules())
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in snn.modules())  # folded
    ann_acc = float((ann(data.x_test).argmax(-1) == data.y_test).float().mean())
    assert _acc(snn, data, 64) >= ann_acc - 0.03, (ann_acc, _acc(snn, data, 64))
    snn64 = copy.deepcopy(snn).double()
    hw = xbar.convert(snn64, xbar.Spec.ideal(tile=(32, 32)), trials=2)
    ds = xbar.simulate(hw, snn64, (data.x_test[:64].double(), data.y_test[:64]), 8, progress=False)
    _assert_ideal_equivalence(ds)


def test_unfoldable_batchnorm_runs_digitally_and_equals_the_ann_layer():
    bn = _random_bn(nn.BatchNorm1d(12), 3)
    x = torch.randn(5, 12)
    torch.testing.assert_close(ChannelAffine(bn)(x), bn(x))
    ann = _random_bn(nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64), nn.Linear(64, 10)), 4)
    snn = convert_ann(ann, torch.rand(20, 1, 8, 8))
    assert isinstance(snn[1], ChannelAffine)
    x = torch.rand(7, 1, 8, 8)
    torch.testing.assert_close(snn(x), ann(x))  # no activation: one step is the ANN


def test_folded_batchnorm_is_exact():
    ann = _random_bn(build_ann("vgg", (1, 8, 8), 10), 5)
    snn = convert_ann(ann, torch.rand(30, 1, 8, 8))
    x = torch.rand(4, 1, 8, 8)
    ref = ann[1](ann[0](x))  # conv then BatchNorm
    torch.testing.assert_close(snn[0](x), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("changes, field", [
    (dict(arch="lstm"), "arch"), (dict(levels=0), "levels"), (dict(weight_bits=1), "weight_bits"),
    (dict(percentile=20.0), "percentile"), (dict(init=1.0), "init"), (dict(epochs=0), "epochs"),
])
def test_bad_conversion_config_is_named(changes, field):
    with pytest.raises(ValueError, match=rf"ConversionConfig\.{field} = .* not allowed"):
        ConversionConfig(**changes)


def test_unknown_layer_is_refused_by_name():
    ann = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"layer '2' \(Tanh\) has no spiking counterpart"):
        convert_ann(ann, torch.rand(3, 4))


def test_thresholds_are_a_high_percentile_not_the_maximum():
    from studies.ann_to_snn import activation_thresholds

    ann = nn.Sequential(nn.Flatten(), nn.Linear(10, 50), build_ann("mlp", (1, 1, 1), 2)[2])
    x = torch.rand(400, 10)
    theta = activation_thresholds(ann, x)["2"]
    with torch.no_grad():
        act = torch.relu(ann[1](ann[0](x)))
    assert theta < float(act.max())
    assert abs(theta - float(np.percentile(act.numpy(), 99.9))) < 1e-3 * theta
