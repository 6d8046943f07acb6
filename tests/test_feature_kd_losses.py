"""The feature-based comparison methods: each loss against values computed here by plain Python loops on tiny
hand-made cases, and each method through `mst distill` with an MM and a CM teacher."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mstcli.methods.baselines.crd import MemoryBank, contrast_scores, crd_nce_loss, log_normalizer, other_rows
from mstcli.methods.baselines.fitnet import HintRegressor, hint_loss
from mstcli.methods.baselines.ofa import ofa_loss
from mstcli.methods.baselines.pkt import like_the_student, pkt_loss
from mstcli.methods.baselines.rkd import rkd_angle_loss, rkd_distance_loss

# four samples in 3-d (student) and 2-d (teacher): relational losses need no common width
S = [[1.0, 0.0, 2.0], [0.5, -1.0, 0.0], [2.0, 1.0, 1.0], [-1.0, 0.5, 0.3]]
T = [[0.2, 1.0], [1.5, -0.5], [0.0, 0.0], [-1.0, 2.0]]


def tensor(rows):
    return torch.tensor(rows, dtype=torch.float64)


def huber(a, b):
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def dist(a, b):
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))


def cosine_at(i, j, k, x):
    """Cosine of the angle at x[j] between x[i] and x[k]."""
    u = [a - b for a, b in zip(x[i], x[j], strict=True)]
    v = [a - b for a, b in zip(x[k], x[j], strict=True)]
    return sum(a * b for a, b in zip(u, v, strict=True)) / (
        math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v))
    )


def softmax(row):
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def test_rkd_distance_loss_by_hand():
    n = len(S)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    mean_s = sum(dist(S[i], S[j]) for i, j in pairs) / len(pairs)
    mean_t = sum(dist(T[i], T[j]) for i, j in pairs) / len(pairs)
    expected = sum(huber(dist(S[i], S[j]) / mean_s, dist(T[i], T[j]) / mean_t) for i, j in pairs) / len(pairs)
    assert float(rkd_distance_loss(tensor(S), tensor(T))) == pytest.approx(expected, rel=1e-9)
    # scaling either net's features leaves the normalized distances, and the loss, unchanged
    assert float(rkd_distance_loss(3 * tensor(S), tensor(T))) == pytest.approx(expected, rel=1e-9)


def test_rkd_angle_loss_by_hand():
    n = len(S)
    triplets = [(i, j, k) for i in range(n) for j in range(n) for k in range(n) if len({i, j, k}) == 3]
    expected = sum(huber(cosine_at(i, j, k, S), cosine_at(i, j, k, T)) for i, j, k in triplets) / len(triplets)
    assert float(rkd_angle_loss(tensor(S), tensor(T))) == pytest.approx(expected, rel=1e-9)
    assert float(rkd_angle_loss(tensor(S), tensor(S) + 5.0)) == pytest.approx(0.0, abs=1e-12)


def test_rkd_losses_give_finite_gradients_with_duplicate_samples():
    x = tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]]).requires_grad_(True)
    (rkd_distance_loss(x, tensor(T[:3])) + rkd_angle_loss(x, tensor(T[:3]))).backward()
    assert torch.isfinite(x.grad).all()


def test_pkt_loss_by_hand():
    teacher = [[0.2, 1.0], [1.5, -0.5], [0.3, 0.1], [-1.0, 2.0]]

    def conditional(x):
        n = len(x)
        norm = [math.sqrt(sum(v * v for v in row)) for row in x]
        kernel = [
            [(1 + sum(a * b for a, b in zip(x[i], x[j], strict=True)) / (norm[i] * norm[j])) / 2 for j in range(n)]
            for i in range(n)
        ]
        return [[kernel[i][j] / sum(kernel[i][k] for k in range(n) if k != i) for j in range(n)] for i in range(n)]

    p, q = conditional(teacher), conditional(S)
    n = len(S)
    expected = sum(p[i][j] * math.log(p[i][j] / q[i][j]) for i in range(n) for j in range(n) if i != j)
    assert float(pkt_loss(tensor(S), tensor(teacher))) == pytest.approx(expected, rel=1e-5)
    assert float(pkt_loss(tensor(teacher), tensor(teacher))) == pytest.approx(0.0, abs=1e-9)


def test_ofa_loss_by_hand():
    student = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    teacher = [[0.3, 0.1, 2.0], [1.5, 0.5, -0.5]]
    labels = [2, 0]
    eps = 1.1
    total = 0.0
    for zs, zt, y in zip(student, teacher, labels, strict=True):
        ps, pt = softmax(zs), softmax(zt)
        total += -sum(((pt[c] + (c == y)) ** eps - (c == y)) * math.log(ps[c]) for c in range(3))
    expected = total / len(labels)
    got = ofa_loss(tensor(student), tensor(teacher), torch.tensor(labels), eps)
    assert float(got) == pytest.approx(expected, rel=1e-9)
    # at eps = 1 the OFA loss is the cross-entropy from the teacher's distribution (the CE is a separate term)
    cross = (
        sum(
            -sum(p * math.log(q) for p, q in zip(softmax(zt), softmax(zs), strict=True))
            for zs, zt in zip(student, teacher, strict=True)
        )
        / 2
    )
    assert float(ofa_loss(tensor(student), tensor(teacher), torch.tensor(labels), 1.0)) == pytest.approx(cross)


def test_hint_loss_and_regressor_shapes():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 2, 4, 4)), rng.normal(size=(3, 2, 4, 4))
    expected = np.mean([0.5 * np.sum((a[i] - b[i]) ** 2) for i in range(3)])
    assert float(hint_loss(torch.from_numpy(a), torch.from_numpy(b))) == pytest.approx(expected, rel=1e-12)

    maps = HintRegressor(guided=(5, 8, 8), hint=(3, 4, 4))
    guided, hint = torch.randn(2, 5, 8, 8), torch.randn(2, 3, 4, 4)
    prediction, target = maps(guided, hint)
    assert prediction.shape == target.shape == (2, 3, 4, 4) and torch.equal(target, hint)
    big_hint = torch.randn(2, 3, 16, 16)
    _, pooled = HintRegressor(guided=(5, 8, 8), hint=(3, 16, 16))(guided, big_hint)
    by_hand = big_hint.numpy().reshape(2, 3, 8, 2, 8, 2).mean(axis=(3, 5))
    assert np.allclose(pooled.numpy(), by_hand, atol=1e-6)

    vector = HintRegressor(guided=(5, 8, 8), hint=(7,))
    prediction, target = vector(guided, torch.randn(2, 7))
    assert prediction.shape == target.shape == (2, 7)
    _, averaged = HintRegressor(guided=(4,), hint=(3, 2, 2))(torch.randn(2, 4), big_hint[:, :, :2, :2])
    assert torch.allclose(averaged, big_hint[:, :, :2, :2].mean(dim=(2, 3)))


def test_crd_nce_loss_by_hand():
    bank = F.normalize(tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.2], [0.3, -0.9]]), dim=1)
    anchors = F.normalize(tensor([[1.0, 0.5], [-0.2, 1.0]]), dim=1)
    positives, negatives = torch.tensor([0, 2]), torch.tensor([[1, 3, 4], [0, 0, 4]])
    tau, rows, n = 0.07, len(bank), 3
    b, a = bank.tolist(), anchors.tolist()

    def score(u, v):
        return sum(x * y for x, y in zip(u, v, strict=True)) / tau

    all_scores = [score(a[i], b[r]) for i in range(2) for r in [positives[i].item(), *negatives[i].tolist()]]
    z = rows * sum(math.exp(s) for s in all_scores) / len(all_scores)

    def h(s):
        p = math.exp(s) / z
        return p / (p + n / rows)

    expected = 0.0
    for i in range(2):
        expected -= math.log(h(score(a[i], b[positives[i]])))
        expected -= sum(math.log(1 - h(score(a[i], b[r]))) for r in negatives[i].tolist())
    expected /= 2

    positive, negative = contrast_scores(anchors, bank, positives, negatives, tau)
    log_z = log_normalizer(positive, negative, rows)
    assert log_z == pytest.approx(math.log(z), rel=1e-9)
    assert float(crd_nce_loss(positive, negative, rows, log_z)) == pytest.approx(expected, rel=1e-9)


def test_crd_negatives_skip_the_own_row_and_bank_moves_with_momentum():
    generator = torch.Generator().manual_seed(0)
    rows = torch.tensor([0, 3, 5])
    drawn = other_rows(rows, 2000, 6, generator)
    assert drawn.shape == (3, 2000) and not (drawn == rows[:, None]).any()
    assert all(set(drawn[i].tolist()) == set(range(6)) - {int(rows[i])} for i in range(3))

    bank = MemoryBank(4, 2, momentum=0.5, device=torch.device("cpu"))
    bank.vectors = tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    bank.update(torch.tensor([1, 2]), tensor([[1.0, 0.0], [0.6, 0.8]]))
    expected = [[1.0, 0.0], [math.sqrt(0.5), math.sqrt(0.5)], None, [0.0, 1.0]]
    mixed = [0.5 * 1.0 + 0.5 * 0.6, 0.5 * 0.8]
    expected[2] = [v / math.hypot(*mixed) for v in mixed]
    assert np.allclose(bank.vectors.numpy(), np.array(expected))


# --- through the CLI -------------------------------------------------------------------------------------------

FEATURE_METHODS = ("fitnet", "rkd", "pkt", "crd", "ofa")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny features and one-epoch stage-1 nets for an image and an audio student, shared by the CLI tests."""
    import yaml
    from conftest import write_raw_avdigits
    from test_stages import TINY, invoke

    root = tmp_path_factory.mktemp("feature_kd")
    raw = write_raw_avdigits(root / "raw.h5", num_images=400)
    params = dict(TINY, prepare={**TINY["prepare"], "source": str(raw)}, train={**TINY["train"], "epochs": 1})
    params["distill"] = {**TINY["distill"], "epochs": 2, "constants": {"fitnet": {"hint_fraction": 0.5}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        invoke("prepare")
        for student in ("image", "audio"):
            invoke("train", "-S", f"common.student={student}", "-S", f"common.run={student}")
    return root


@pytest.mark.parametrize("method", FEATURE_METHODS)
@pytest.mark.parametrize("teacher", ["mm", "cm"])
@pytest.mark.parametrize("student", ["image", "audio"])
def test_feature_method_distills_a_student(trained, monkeypatch, method, teacher, student):
    from test_stages import invoke, read_tsv

    monkeypatch.chdir(trained)
    out, results = (
        trained / f"models/{student}/{method}-{teacher}.pt",
        trained / f"results/{student}/{method}-{teacher}",
    )
    invoke("distill", "--method", method, "--teacher", teacher, "--out", str(out), "--results", str(results),
           "-S", f"common.student={student}", "-S", f"common.run={student}")  # fmt: skip
    checkpoint = torch.load(out, weights_only=False)
    assert checkpoint["method"] == method and checkpoint["teacher"] == teacher
    stage1 = torch.load(trained / f"models/{student}/stage1.pt", weights_only=False)["state"]
    student_keys = {k.removeprefix("student.net.") for k in stage1 if k.startswith("student.net.")}
    assert set(checkpoint["state"]) == student_keys  # the student's weights only, no regressor/head/projector
    curves = read_tsv(results / "distill")
    assert len(curves) == 2 and all(math.isfinite(row["loss"]) for row in curves)
    if method == "fitnet":  # epoch 0 trains hints only, epoch 1 is KD
        assert curves[0]["loss"] == pytest.approx(curves[0]["hint"], rel=1e-6)
        assert curves[1]["loss"] == pytest.approx(0.5 * curves[1]["ce"] + 0.5 * curves[1]["kd"], rel=1e-5)


def test_fitnet_refuses_hint_epochs_that_leave_no_kd(trained, monkeypatch):
    from typer.testing import CliRunner

    from mstcli.cli import app

    monkeypatch.chdir(trained)
    args = ["distill", "--method", "fitnet", "-S", "common.run=image"]
    args += ["-S", "distill.constants={fitnet: {hint_fraction: 1.0}}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "hint_fraction" in result.output and "leaves no KD epoch" in result.output


def test_rkd_angle_loss_in_float32_matches_float64_in_value_and_gradient():
    """The B^3 part runs in the features' dtype: at a real batch size, float32 must agree with float64."""
    torch.manual_seed(0)
    student, teacher = torch.randn(64, 84) * 20, torch.randn(64, 120) * 20
    grads = []
    for dtype in (torch.float32, torch.float64):
        s = student.to(dtype).requires_grad_()
        loss = rkd_angle_loss(s, teacher.to(dtype))
        grads.append((float(loss), torch.autograd.grad(loss, s)[0].double()))
    (loss32, grad32), (loss64, grad64) = grads
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    assert (grad32 - grad64).abs().max() <= 1e-4 * grad64.abs().max()


def test_rkd_angle_gradient_is_the_autograd_gradient_of_the_plain_definition():
    """The angle term's gradient is written by hand (block by block); it must be what autograd gives for the
    definition: cosines of the angles at x_j of every triplet of distinct samples, smooth-L1, mean."""
    torch.manual_seed(3)
    student, teacher = torch.randn(9, 5, dtype=torch.float64), torch.randn(9, 7, dtype=torch.float64)

    def cosines(x):
        e = x[:, None, :] - x[None, :, :]  # e[i, j] = x_i - x_j
        e = e / e.norm(dim=2, keepdim=True).clamp_min(1e-12)
        return torch.einsum("ijd,kjd->ijk", e, e)

    i, j, k = torch.meshgrid(*(torch.arange(9),) * 3, indexing="ij")
    distinct = (i != j) & (j != k) & (i != k)
    s, t = student.clone().requires_grad_(), teacher.clone().requires_grad_()  # RKD's teacher embedding learns too
    plain = F.smooth_l1_loss(cosines(s)[distinct], cosines(t)[distinct])
    expected = torch.autograd.grad(plain, (s, t))
    s, t = student.clone().requires_grad_(), teacher.clone().requires_grad_()
    loss = rkd_angle_loss(s, t)
    assert float(loss) == pytest.approx(float(plain), rel=1e-9)
    for got, want in zip(torch.autograd.grad(loss, (s, t)), expected, strict=True):
        assert torch.allclose(got, want, rtol=1e-7, atol=1e-12)
    # a batch of several blocks (block-wise accumulation) against the plain definition, in float32
    torch.manual_seed(4)
    student, teacher = torch.randn(70, 6), torch.randn(70, 5)
    i, j, k = torch.meshgrid(*(torch.arange(70),) * 3, indexing="ij")
    distinct = (i != j) & (j != k) & (i != k)
    s, t = student.clone().requires_grad_(), teacher.clone().requires_grad_()
    expected = torch.autograd.grad(F.smooth_l1_loss(cosines(s)[distinct], cosines(t)[distinct]), (s, t))
    s, t = student.clone().requires_grad_(), teacher.clone().requires_grad_()
    for got, want in zip(torch.autograd.grad(rkd_angle_loss(s, t), (s, t)), expected, strict=True):
        assert torch.allclose(got, want, rtol=1e-3, atol=1e-6)



def test_pkt_takes_a_signed_teacher_rectified_for_a_rectified_student():
    """A rectified student's cosines lie in [0, 1]: the signed teacher's neighbours (other classes at cos < 0) are
    out of its reach, so its features are rectified first; a signed student, or the switch off, leaves them."""
    torch.manual_seed(0)
    teacher = torch.randn(16, 8)
    student = torch.relu(torch.randn(16, 32))
    assert torch.equal(like_the_student(student, teacher, rectify=True), torch.relu(teacher))
    assert torch.equal(like_the_student(student - 0.5, teacher, rectify=True), teacher)
    assert torch.equal(like_the_student(student, teacher, rectify=False), teacher)
    non_negative = torch.relu(teacher)
    assert torch.equal(like_the_student(student, non_negative, rectify=True), non_negative)  # a ReLU'd teacher as is
    # the rectified target is one a rectified student can match exactly: zero loss at student = rectified teacher
    target = like_the_student(student, teacher, rectify=True)
    assert pkt_loss(target.clone(), target) == pytest.approx(0.0, abs=1e-6)
