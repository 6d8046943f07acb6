"""The fast path gives the numbers of the slow one: the expert bank (S3), the layer cache (S2), the nets' tails."""

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import random_split, tiny_trio

from mstcli.config import DistillParams
from mstcli.engine.bank import logit_bank
from mstcli.engine.checkpoints import MasksCheckpoint
from mstcli.engine.splits import Split
from mstcli.methods.base import DistillContext
from mstcli.methods.losses import kd_loss
from mstcli.methods.mst.dynamic_distillation import MSTDistill
from mstcli.methods.mst.experts import masks_from_records
from mstcli.methods.mst.layer_cache import build_layer_cache, layer_outputs, plan_cache
from mstcli.methods.mst.masked_teachers import MaskedTeachers, build_masks, mask_records
from mstcli.methods.registry import build_method
from mstcli.models.trio import Trio


def masks_checkpoint(trio: Trio, path, split: Split):
    torch.manual_seed(2)
    masks = build_masks(trio, split.batch(torch.arange(2)), layers=2, heads=3, factor=16)
    for _, net in masks:  # move the masks away from their initial state so that composition matters
        for p in net.parameters():
            p.data.add_(0.3 * torch.randn_like(p))
    checkpoint = MasksCheckpoint(
        spec=trio.spec.to_dict(),
        inputs={"dataset": "avdigits", "features": "-", "split_group": 0},
        settings={},
        stage1=trio.fingerprint,
        masks=mask_records(masks, [net.state_dict() for _, net in masks], heads=3, factor=16),
    )
    checkpoint.save(path)
    return masks


def loaded_masks(path):
    """The MaskNets as the S3 stage gets them: read back from the checkpoint file."""
    return masks_from_records(MasksCheckpoint.load(path).masks)


@pytest.mark.parametrize("compose", ["cumulative", "single"])
def test_s3_losses_from_the_bank_equal_recomputation(tmp_path, compose):
    trio = tiny_trio()
    train = random_split(40)
    masks_checkpoint(trio, tmp_path / "masks.pt", train)
    losses = {}
    for bank in (True, False):
        settings = dataclasses.replace(DistillParams(), compose=compose, bank=bank, k=2, gate_signal="weighted")
        torch.manual_seed(3)  # the same GateNet initialisation for both
        context = DistillContext(
            settings, trio, trio.student, {"train": train}, "cpu", loaded_masks(tmp_path / "masks.pt")
        )
        method = MSTDistill(context)
        assert (method.bank is not None) == bank
        batch = train.batch(torch.tensor([5, 17, 2, 33, 8]))
        student_logits = torch.randn(5, 10, generator=torch.Generator().manual_seed(4))
        loss, terms = method.loss(batch, student_logits)
        losses[bank] = (loss, terms)
    (fast, fast_terms), (slow, slow_terms) = losses[True], losses[False]
    assert float(slow_terms["distill"]) > 0
    assert abs(float(fast.detach()) - float(slow.detach())) <= 1e-5
    for name in ("ce", "distill", "balance"):
        assert abs(float(fast_terms[name]) - float(slow_terms[name])) <= 1e-5


def test_the_two_compositions_give_different_banks(tmp_path):
    trio = tiny_trio()
    train = random_split(12)
    masks_checkpoint(trio, tmp_path / "masks.pt", train)
    banks = {}
    for compose in ("cumulative", "single"):
        settings = dataclasses.replace(DistillParams(), compose=compose)
        context = DistillContext(
            settings, trio, trio.student, {"train": train}, "cpu", loaded_masks(tmp_path / "masks.pt")
        )
        banks[compose] = MSTDistill(context).bank
    assert banks["cumulative"].shape == (4, 12, 10)
    assert torch.allclose(banks["cumulative"][0], banks["single"][0])  # the first expert of a teacher: one mask
    assert not torch.allclose(banks["cumulative"][1], banks["single"][1], atol=1e-4)  # the second: 1 or 2 masks


@pytest.mark.parametrize("name", ["kd", "dkd", "mlld", "dist"])
def test_teacher_logits_from_the_bank_equal_recomputation(name):
    trio = tiny_trio("image")
    with torch.no_grad():  # an untrained teacher gives nearly the same logits to every sample: spread them
        trio.mm.net.fc2.weight.mul_(1000.0)
    train = random_split(30)
    batch = train.batch(torch.tensor([3, 29, 0, 11, 7]))
    student_logits = torch.randn(5, 10)
    results = []
    for bank in (True, False):
        settings = dataclasses.replace(DistillParams(), method=name, teacher="mm", bank=bank)
        method = build_method(name, DistillContext(settings, trio, trio.student, {"train": train}, "cpu"))
        assert (method.teacher.bank is not None) == bank
        results.append(method.loss(batch, student_logits)[0])
    assert abs(float(results[0]) - float(results[1])) <= 1e-5


@pytest.mark.parametrize("student", ["image", "audio"])
def test_every_net_tail_continues_its_forward(student):
    trio = tiny_trio(student)
    split = random_split(6)
    for key in ("mm", "student", "cm"):
        net = dict(trio.members())[key]
        outs = layer_outputs(net, net.net.mask_layers, split, batch_size=4)
        full = net(split.inputs)
        for layer, z in outs.items():
            assert torch.allclose(net.net.tail(layer, z), full, atol=1e-6), (key, layer)


def test_s2_losses_and_gradients_from_the_layer_cache_equal_recomputation():
    trio = tiny_trio()
    train = random_split(24)
    torch.manual_seed(5)
    masks = build_masks(trio, train.batch(torch.arange(2)), layers=2, heads=3, factor=16)
    teachers = {key: trio.teacher(key) for key in trio.spec.teacher_keys}
    keys = [(slot.teacher, slot.layer) for slot, _ in masks]
    cache = {"train": build_layer_cache(teachers, keys, train, batch_size=7)}
    batch = train.batch(torch.tensor([1, 4, 9, 23, 12, 0]))
    target = trio.student(batch.inputs)
    for i, (_, net) in enumerate(masks):
        net.train()
        results = []
        for masked in (MaskedTeachers(trio, masks, cache), MaskedTeachers(trio, masks, {})):
            net.zero_grad()
            loss = kd_loss(masked.logits(i, "train", batch), target, 4.0)
            loss.backward()
            results.append((float(loss), [p.grad.clone() for p in net.parameters()]))
        (fast, fast_grads), (slow, slow_grads) = results
        assert abs(fast - slow) <= 1e-5
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(fast_grads, slow_grads, strict=True))


def test_the_cache_plan_keeps_to_its_budget():
    trio = tiny_trio()
    teachers = {key: trio.teacher(key) for key in trio.spec.teacher_keys}
    slots = [(("mm", "concat_identity"), (596,)), (("mm", "fc1"), (298,)), (("cm", "features.fc1"), (84,))]
    rows = 2**20 // (4 * 596)  # the first slot alone takes about 1 MiB
    assert plan_cache(slots, teachers, rows, 0) == []
    assert plan_cache(slots, teachers, rows, 1) == [("mm", "concat_identity")]
    assert plan_cache(slots, teachers, rows, 2) == [key for key, _ in slots]


def test_logit_bank_is_the_per_batch_forward_in_row_order():
    trio = tiny_trio()
    split = random_split(10)
    bank = logit_bank(trio.mm, split, batch_size=3)
    assert torch.allclose(bank, trio.mm(split.inputs), atol=1e-6)


@pytest.mark.parametrize("count", [0, 7, 300, 999])
def test_feature_rows_are_gathered_in_the_requested_order(tmp_path, count):
    import h5py
    import numpy as np

    from mstcli.data.store import gather_rows

    rng = np.random.default_rng(count)
    data = rng.random((1000, 2, 3), dtype=np.float32)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["x"] = data
        indices = rng.permutation(1000)[:count] if count != 300 else rng.integers(0, 1000, count)  # with repeats
        for block_bytes in (100, 1 << 20):  # several blocks, one block
            assert np.array_equal(gather_rows(f["x"], indices, block_bytes), data[indices])


@pytest.mark.parametrize("student", ["image", "audio"])
@pytest.mark.parametrize("compose", ["cumulative", "single"])
def test_shared_teacher_forward_gives_each_experts_own_plugged_forward(tmp_path, student, compose):
    """S3's experts from one forward per teacher (mask outputs recorded, the rest continued by ``tail``) equal
    one hooked forward per expert, the reference's way, for both compositions and both students' CM teachers."""
    from mstcli.methods.mst.experts import SpecializedTeachers

    trio = tiny_trio(student)
    split = random_split(9)
    masks_checkpoint(trio, tmp_path / "masks.pt", split)
    experts = SpecializedTeachers(
        {key: trio.teacher(key) for key in trio.spec.teacher_keys}, loaded_masks(tmp_path / "masks.pt"), compose
    )
    shared, plugged = experts(split.inputs), experts.forward_plugged(split.inputs)
    assert shared.shape == plugged.shape == (4, 9, 10)
    assert torch.allclose(shared, plugged, atol=1e-5)
    assert not torch.allclose(plugged[0], plugged[1], atol=1e-3)  # the experts differ: the test can tell them apart


def test_the_three_linear_head_tail_continues_its_forward():
    """RAVDESS', VGGSound's and CrisisMMD's nets end in the same head; its tail lets S2 cache and S3 share."""
    from mstcli.models.crisismmd import MLPI, MLPBranch

    torch.manual_seed(0)
    for net, inputs in (
        (MLPBranch((16,), 8), (torch.randn(5, 16),)),
        (MLPI(((16,), (12,)), 8), (torch.randn(5, 16), torch.randn(5, 12))),
    ):
        outs = {}
        handles = [
            getattr(net, name).register_forward_hook(
                lambda _m, _i, out, name=name, outs=outs: outs.__setitem__(name, out)
            )
            for name in net.mask_layers
        ]
        full = net(*inputs)
        for handle in handles:
            handle.remove()
        for layer in net.mask_layers:
            assert torch.allclose(net.tail(layer, outs[layer]), full, atol=1e-6), layer
        with pytest.raises(KeyError):
            net.tail("fc3", outs["fc2"])


@pytest.mark.parametrize("name", ["fitnet", "rkd", "pkt", "crd", "ofa"])
@pytest.mark.parametrize("teacher", ["mm", "cm"])
def test_teacher_features_from_the_bank_equal_recomputation(name, teacher):
    """The feature-based methods read the frozen teacher's logits and tapped features from a bank computed once;
    their loss and its gradients must be those of running the teacher on the batch."""
    trio = tiny_trio("image")
    with torch.no_grad():  # an untrained net gives nearly the same features to every sample: spread them
        for p in [*trio.mm.parameters(), *trio.teacher("cm").parameters()]:
            p.mul_(4.0)
    train = random_split(30)
    batch = train.batch(torch.tensor([3, 29, 0, 11, 7, 18]))
    results = []
    for bank in (True, False):
        torch.manual_seed(0)  # the methods' own heads and regressors start alike
        student = copy.deepcopy(trio.student).requires_grad_(True)
        settings = dataclasses.replace(DistillParams(), method=name, teacher=teacher, bank=bank)
        method = build_method(name, DistillContext(settings, trio, student, {"train": train}, "cpu"))
        assert (method.pair.bank is not None) == bank
        method.start_epoch(0)  # FitNet's hint phase and every other method's only phase read teacher features
        torch.manual_seed(1)  # CRD draws its negatives
        loss, _ = method.loss(batch, student(batch.inputs))
        loss.backward()
        results.append((float(loss), [p.grad.clone() for p in student.parameters() if p.grad is not None]))
    (with_bank, grads_bank), (without, grads) = results
    assert with_bank == pytest.approx(without, rel=1e-5, abs=1e-6)
    assert len(grads_bank) == len(grads) > 0
    for a, b in zip(grads_bank, grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_teacher_features_beyond_both_budgets_are_recomputed():
    trio = tiny_trio("image")
    train = random_split(30)
    settings = dataclasses.replace(
        DistillParams(), method="fitnet", teacher="cm", teacher_cache_mb=0, teacher_spill_mb=0
    )
    method = build_method("fitnet", DistillContext(settings, trio, trio.student, {"train": train}, "cpu"))
    assert method.pair.bank is None and method.pair.spilled is None and method.pair.bank_bytes(30, 10) > 0


@pytest.mark.parametrize("name", ["fitnet", "rkd", "crd"])
def test_teacher_features_spilled_to_disk_equal_the_memory_bank(name):
    """Beyond distill.teacher_cache_mb the bank goes to a temporary HDF5 file: a batch (rows in any order, one
    repeated) must get exactly the logits and features of the in-memory bank, and the file goes with the bank."""
    trio = tiny_trio("image")
    train = random_split(30)
    rows = torch.tensor([17, 3, 29, 3, 0])
    got = []
    for cache_mb in (1024, 0):
        settings = dataclasses.replace(DistillParams(), method=name, teacher="mm", teacher_cache_mb=cache_mb)
        torch.manual_seed(0)
        method = build_method(name, DistillContext(settings, trio, trio.student, {"train": train}, "cpu"))
        pair = method.pair
        assert (pair.bank is not None) == (cache_mb > 0) and (pair.spilled is not None) == (cache_mb == 0)
        logits = pair.teach(train.batch(rows))
        got.append((logits, dict(pair.teacher_tap.features), pair.spilled))
    (memory, memory_features, _), (disk, disk_features, spilled) = got
    assert torch.equal(memory, disk) and memory_features.keys() == disk_features.keys() and disk_features
    for key in memory_features:
        assert torch.equal(memory_features[key], disk_features[key]), key
    path = Path(spilled.path)
    assert path.is_file()
    spilled.close()
    assert not path.exists()
