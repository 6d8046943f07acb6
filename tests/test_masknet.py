import copy

import pytest
import torch

from mstcli.methods.mst.experts import MaskSlot, SpecializedTeachers
from mstcli.methods.mst.masknet import MaskNet, hidden_size, layer_output_shapes, masknet_for, plugged
from mstcli.models.avmnist import CNNI, LeNet5, ThreeLayerCNNA
from mstcli.models.trio import ModalNet


def test_hidden_size_follows_the_reference_rule():
    assert hidden_size(596, 3, 2) == 297
    assert hidden_size(320, 3, 2) == 159
    assert hidden_size(512, 3, 2) == 255
    assert hidden_size(4, 3, 2) == 3  # never zero


def test_parameter_count_of_the_reference_avmnist_masknet():
    # docs/method.md §2.3: the MM concat_identity MaskNet (D=596, h=297) has about 106.0 M parameters
    assert sum(p.numel() for p in MaskNet(596, 3, 2).parameters()) / 1e6 == pytest.approx(106.0, abs=0.1)


@pytest.mark.parametrize("layer", ["features.conv3", "features.fc1"])
def test_hook_changes_output_not_weights(layer):
    torch.manual_seed(0)
    net = LeNet5((1, 28, 28), 10).eval()
    net.requires_grad_(False)  # frozen, as in S2 and S3
    x = torch.randn(4, 1, 28, 28)
    before = copy.deepcopy(net.state_dict())
    plain = net(x)
    shape = layer_output_shapes(net, [layer], x)[layer]
    mask = masknet_for(shape, heads=3, hidden_dim_factor=2)
    optimizer = torch.optim.Adam(mask.parameters(), lr=0.1)
    with plugged(net, [(layer, mask)]):
        masked = net(x)
        masked.sum().backward()
        optimizer.step()
    assert not torch.allclose(masked, plain)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters()), "the teacher must not receive gradients into its weights"
    assert all(p.grad is not None for p in mask.parameters() if p.requires_grad)
    assert torch.equal(net(x), plain), "removing the hook restores the teacher exactly"


def test_spatial_mask_is_broadcast_over_the_map():
    net = ThreeLayerCNNA((1, 32, 32), 10).eval()
    x = torch.randn(3, 1, 32, 32)
    shape = layer_output_shapes(net, ["conv2"], x)["conv2"]
    assert shape == (64, 16, 16)
    mask = masknet_for(shape, 3, 2).eval()
    z = torch.randn(3, *shape)
    out = mask(z)
    ratio = out / z
    # one factor per (sample, channel), in (0, 1)
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio), atol=1e-5)
    assert (ratio > 0).all() and (ratio < 1).all()


def test_cumulative_and_single_composition():
    torch.manual_seed(0)
    mm = ModalNet(CNNI(((1, 28, 28), (1, 16, 16)), 10), ("image", "audio")).eval()
    cm = ModalNet(ThreeLayerCNNA((1, 16, 16), 10), ("audio",)).eval()
    inputs = {"image": torch.randn(5, 1, 28, 28), "audio": torch.randn(5, 1, 16, 16)}
    slots = [
        (MaskSlot("mm", "concat_identity", (596,)), MaskNet(596, 3, 16)),
        (MaskSlot("mm", "fc1", (298,)), MaskNet(298, 3, 16)),
        (MaskSlot("cm", "conv2", (64, 8, 8)), MaskNet(64, 3, 2, spatial=True)),
        (MaskSlot("cm", "conv3", (128, 4, 4)), MaskNet(128, 3, 2, spatial=True)),
    ]
    teachers = {"mm": mm, "cm": cm}
    cumulative = SpecializedTeachers(teachers, slots, "cumulative")
    single = SpecializedTeachers(teachers, slots, "single")
    assert cumulative.names == ["mm@concat_identity", "mm@concat_identity+fc1", "cm@conv2", "cm@conv2+conv3"]
    assert single.names == ["mm@concat_identity", "mm@fc1", "cm@conv2", "cm@conv3"]
    a, b = cumulative(inputs), single(inputs)
    assert a.shape == (4, 5, 10)

    # the experts written out layer by layer, each mask multiplying its layer's output (no hooks)
    (_, m_fused), (_, m_fc1), (_, m_conv2), (_, m_conv3) = slots
    i, c = mm.net, cm.net
    with torch.no_grad():
        fused = torch.cat([i.image_branch(inputs["image"]), i.audio_branch(inputs["audio"])], dim=1)
        conv2 = c.conv2(c.pool(c.act(c.conv1(inputs["audio"]))))

        def cm_rest(z2, mask3=None):  # conv2 output -> logits, with the conv3 mask or without
            z3 = c.conv3(c.pool(c.act(z2)))
            return c.fc(c.pool(c.act(mask3(z3) if mask3 else z3)).flatten(1))

        by_hand = {
            "mm@concat_identity": i.fc2(i.fc1(m_fused(fused))),
            "mm@fc1": i.fc2(m_fc1(i.fc1(fused))),
            "mm@concat_identity+fc1": i.fc2(m_fc1(i.fc1(m_fused(fused)))),
            "cm@conv2": cm_rest(m_conv2(conv2)),
            "cm@conv3": cm_rest(conv2, m_conv3),
            "cm@conv2+conv3": cm_rest(m_conv2(conv2), m_conv3),
        }
    for teachers_out, composition in ((a, cumulative), (b, single)):
        for expert, name in enumerate(composition.names):
            assert torch.allclose(teachers_out[expert], by_hand[name], atol=1e-5), name
    assert not torch.allclose(a[1], b[1], atol=1e-4) and not torch.allclose(a[3], b[3], atol=1e-4)


def test_feature_tap_reads_penultimate_and_hint_layers():
    from mstcli.models.avmnist import LeNet5
    from mstcli.models.taps import PENULTIMATE, FeatureTap, penultimate_size

    net = LeNet5((1, 28, 28), 10)
    x = torch.randn(3, 1, 28, 28)
    tap = FeatureTap(net, ["features.conv3"])
    logits = net(x)
    assert tap[PENULTIMATE].shape == (3, penultimate_size(net)) == (3, 84)
    assert torch.allclose(net.fc2(tap[PENULTIMATE]), logits)
    assert tap["features.conv3"].shape == (3, 120, 1, 1)
    tap.close()
    net(x * 2)
    assert torch.allclose(net.fc2(tap[PENULTIMATE]), logits)  # no longer updated once closed


@pytest.mark.parametrize("dim, heads", [(297, 3), (24, 3), (10, 2)])
def test_channel_attention_equals_torch_multihead_attention(dim, heads):
    from mstcli.methods.mst.masknet import ChannelAttention

    torch.manual_seed(0)
    reference = torch.nn.MultiheadAttention(dim, heads, batch_first=True)
    with torch.no_grad():
        reference.in_proj_bias.normal_()
        reference.out_proj.bias.normal_()
    ours = ChannelAttention(dim, heads)
    ours.load_state_dict(reference.state_dict())  # the same parameter names
    x = torch.randn(4, 7, dim)
    expected, _ = reference(x, x, x, need_weights=False)
    assert torch.allclose(ours(x), expected, atol=1e-5)
