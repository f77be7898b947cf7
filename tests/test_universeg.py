"""UniverSeg architecture: v1 key names/shapes, fast path vs the pairwise oracle."""

import pytest
import torch

from incontext.models import UniverSeg, UniverSegConfig, pairwise_forward, parameter_count

V1_PARAMETERS = 1_182_785  # published UniverSeg v1


def _inputs(b, s, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(b, 1, size, size, generator=g)
    images = torch.rand(b, s, 1, size, size, generator=g)
    labels = (torch.rand(b, s, 1, size, size, generator=g) > 0.5).float()
    return target, images, labels


def test_v1_parameter_count_and_state_dict_layout():
    model = UniverSeg()
    assert parameter_count(model) == V1_PARAMETERS
    sd = model.state_dict()
    expected = {}
    for i in range(4):
        cin = 3 if i == 0 else 128
        expected[f"enc_blocks.{i}.cross.cross_conv.weight"] = (64, cin, 3, 3)
        expected[f"enc_blocks.{i}.cross.cross_conv.bias"] = (64,)
        for part in ("target", "support"):
            expected[f"enc_blocks.{i}.{part}.vmapped.conv.weight"] = (64, 64, 3, 3)
            expected[f"enc_blocks.{i}.{part}.vmapped.conv.bias"] = (64,)
    for i in range(3):
        expected[f"dec_blocks.{i}.cross.cross_conv.weight"] = (64, 256, 3, 3)
        expected[f"dec_blocks.{i}.cross.cross_conv.bias"] = (64,)
        for part in ("target", "support"):
            expected[f"dec_blocks.{i}.{part}.vmapped.conv.weight"] = (64, 64, 3, 3)
            expected[f"dec_blocks.{i}.{part}.vmapped.conv.bias"] = (64,)
    expected["out_conv.conv.weight"] = (1, 64, 1, 1)
    expected["out_conv.conv.bias"] = (1,)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected


def test_initialisation_zero_bias_and_kaiming_scale():
    torch.manual_seed(0)
    model = UniverSeg()
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert torch.all(p == 0), name
    # kaiming normal, leaky_relu gain sqrt(2) for the convs, linear gain 1 for the cross-conv
    w = model.enc_blocks[1].target.vmapped.conv.weight
    assert w.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)
    c = model.enc_blocks[1].cross.cross_conv.weight
    assert c.std().item() == pytest.approx((1 / (128 * 9)) ** 0.5, rel=0.05)


@pytest.mark.parametrize("s", [1, 3, 8, 64])
def test_fast_path_equals_pairwise_oracle(s):
    torch.manual_seed(s)
    model = UniverSeg().eval()
    target, images, labels = _inputs(2, s)
    with torch.no_grad():
        fast = model(target, images, labels)
        oracle = pairwise_forward(model, target, images, labels)
    assert fast.shape == (2, 1, 32, 32)
    assert torch.allclose(fast, oracle, atol=1e-4, rtol=0)
    # batch entries are independent: each query with its own support set
    with torch.no_grad():
        single = model(target[1:], images[1:], labels[1:])
    assert torch.allclose(single, fast[1:], atol=1e-4, rtol=0)


def test_fast_path_inference_mode_matches_grad_mode():
    torch.manual_seed(1)
    model = UniverSeg(encoder_widths=(8, 8, 8))
    target, images, labels = _inputs(2, 4)
    with torch.inference_mode():
        a = model(target, images, labels)
    b = model(target, images, labels).detach()
    assert torch.allclose(a, b, atol=1e-5)


def test_gradients_flow_and_match_oracle():
    torch.manual_seed(2)
    model = UniverSeg(encoder_widths=(16, 16, 16))
    target, images, labels = _inputs(2, 3, size=16)
    images.requires_grad_(True)
    model(target, images, labels).square().mean().backward()
    fast = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    fast_img = images.grad.clone()
    model.zero_grad(set_to_none=True)
    images.grad = None
    pairwise_forward(model, target, images, labels).square().mean().backward()
    oracle = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert fast.keys() == oracle.keys()
    # the last decoder block's support conv feeds nothing, in both implementations
    dead = {n for n, _ in model.named_parameters()} - set(fast)
    assert dead == {"dec_blocks.1.support.vmapped.conv.weight",
                    "dec_blocks.1.support.vmapped.conv.bias"}
    for name, grad in fast.items():
        assert grad.abs().sum() > 0, name
        assert torch.allclose(grad, oracle[name], atol=1e-5, rtol=1e-3), name
    assert torch.allclose(fast_img, images.grad, atol=1e-6, rtol=1e-3)


def test_configurable_widths_depth_and_sizes():
    model = UniverSeg(encoder_widths=(8, 16, 24), resolution=64)
    assert len(model.dec_blocks) == 2
    target, images, labels = _inputs(1, 2, size=24)  # any size divisible by 4
    assert model(target, images, labels).shape == (1, 1, 24, 24)
    single = UniverSeg(encoder_widths=(8,), resolution=8)
    assert single(*_inputs(2, 2, size=7)).shape == (2, 1, 7, 7)


def test_bad_shapes_are_clear_errors():
    model = UniverSeg(encoder_widths=(8, 8, 8))
    target, images, labels = _inputs(1, 2, size=16)
    with pytest.raises(ValueError, match="divisible by 4"):
        model(*_inputs(1, 2, size=18))
    with pytest.raises(ValueError, match="differ in shape"):
        model(target, images, labels[:, :1])
    with pytest.raises(ValueError, match="empty"):
        model(target, images[:, :0], labels[:, :0])
    with pytest.raises(ValueError, match="expects target"):
        model(target[0], images, labels)
    with pytest.raises(ValueError, match="resolution"):
        UniverSegConfig(encoder_widths=(8, 8, 8), resolution=30)


@pytest.mark.parametrize("channels_last", [True, False])
def test_entry_mean_is_the_mean_over_support_entries(channels_last):
    from incontext.models.universeg import _entry_mean

    torch.manual_seed(0)
    x = torch.randn(3 * 5, 4, 6, 7)  # B = 3 queries, S = 5 entries
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    mean = _entry_mean(x, 5)
    assert mean.shape == (3, 4, 6, 7)
    assert mean.is_contiguous(memory_format=torch.channels_last)
    expected = torch.stack([x[i * 5:(i + 1) * 5].mean(dim=0) for i in range(3)])
    torch.testing.assert_close(mean, expected)
