"""Golden values for the losses of the comparison methods DKD, MLLD, DIST, DML, C2KD and MGDFR: each on a tiny
hand-made case against a computation written independently here (plain Python / numpy loops)."""

import math

import numpy as np
import pytest
import torch

from mstcli.methods.baselines.c2kd import c2kd_terms, kendall_tau, selected_non_target_kd
from mstcli.methods.baselines.dist import dist_terms, pearson_rows
from mstcli.methods.baselines.dkd import dkd_terms, non_target_kd_per_sample
from mstcli.methods.baselines.dml import mutual_pair_loss
from mstcli.methods.baselines.mgdfr import cotraining_loss, freeze_to_batch_mean, permutation_salience
from mstcli.methods.baselines.mlld import batch_alignment, class_alignment, mlld_terms

S = [[1.0, 2.0, 0.5, -1.0], [0.0, -1.0, 3.0, 0.5], [2.0, 0.1, 0.2, 0.3]]
T = [[0.3, 0.1, 2.0, 1.0], [1.5, 0.5, -0.5, 0.0], [2.5, -0.5, 0.0, 1.0]]
LABELS = [1, 2, 0]


def softmax(row, t=1.0):
    exps = [math.exp(v / t) for v in row]
    return [e / sum(exps) for e in exps]


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def ce(row, y):
    return -math.log(softmax(row)[y])


def tensor(x, grad=False):
    return torch.tensor(x, dtype=torch.float64, requires_grad=grad)


# --- DKD ---------------------------------------------------------------------------------------------------------


def dkd_by_hand(s, t, labels, tau):
    tckd = nckd = 0.0
    for zs, zt, y in zip(s, t, labels, strict=True):
        ps, pt = softmax(zs, tau), softmax(zt, tau)
        tckd += kl([pt[y], 1 - pt[y]], [ps[y], 1 - ps[y]])
        rest_s = softmax([v for j, v in enumerate(zs) if j != y], tau)
        rest_t = softmax([v for j, v in enumerate(zt) if j != y], tau)
        nckd += kl(rest_t, rest_s)
    return tau**2 * tckd / len(s), tau**2 * nckd / len(s)


def test_dkd_terms_match_hand_computation_and_decompose_kd():
    tckd, nckd = dkd_terms(tensor(S), tensor(T), torch.tensor(LABELS), 4.0)
    want_t, want_n = dkd_by_hand(S, T, LABELS, 4.0)
    assert tckd.item() == pytest.approx(want_t, rel=1e-9) and nckd.item() == pytest.approx(want_n, rel=1e-9)
    # the paper's identity, per sample: KD = TCKD + (1 - p_t[target]) NCKD
    per_sample = non_target_kd_per_sample(tensor(S), tensor(T), torch.tensor(LABELS), 2.0) / 4.0
    for i, (zs, zt, y) in enumerate(zip(S, T, LABELS, strict=True)):
        ps, pt = softmax(zs, 2.0), softmax(zt, 2.0)
        tckd_i = kl([pt[y], 1 - pt[y]], [ps[y], 1 - ps[y]])
        assert kl(pt, ps) == pytest.approx(tckd_i + (1 - pt[y]) * per_sample[i].item(), rel=1e-9)


# --- MLLD --------------------------------------------------------------------------------------------------------


def probs(x, tau):
    return np.array([softmax(row, tau) for row in x])


def batch_by_hand(s, t, tau):
    """sum over sample pairs (i, j) of (<p_t,i, p_t,j> - <p_s,i, p_s,j>)^2, divided by B."""
    ps, pt = probs(s, tau), probs(t, tau)
    b, c = ps.shape
    total = sum(
        (sum(pt[i, k] * pt[j, k] for k in range(c)) - sum(ps[i, k] * ps[j, k] for k in range(c))) ** 2
        for i in range(b)
        for j in range(b)
    )
    return total / b


def class_by_hand(s, t, tau):
    """sum over class pairs (i, j) of (sum_n p_t,n,i p_t,n,j - sum_n p_s,n,i p_s,n,j)^2, divided by C."""
    ps, pt = probs(s, tau), probs(t, tau)
    b, c = ps.shape
    total = sum(
        (sum(pt[n, i] * pt[n, j] for n in range(b)) - sum(ps[n, i] * ps[n, j] for n in range(b))) ** 2
        for i in range(c)
        for j in range(c)
    )
    return total / c


def test_mlld_batch_and_class_alignment_follow_the_paper_normalization():
    tau = 3.0
    assert batch_alignment(tensor(S), tensor(T), tau).item() == pytest.approx(batch_by_hand(S, T, tau), rel=1e-9)
    assert class_alignment(tensor(S), tensor(T), tau).item() == pytest.approx(class_by_hand(S, T, tau), rel=1e-9)


def test_mlld_sums_each_level_over_the_temperatures():
    temps = (2.0, 5.0)
    terms = mlld_terms(tensor(S), tensor(T), temps)
    assert set(terms) == {"instance", "batch", "class"}
    instance = sum(
        t * t * sum(kl(softmax(b, t), softmax(a, t)) for a, b in zip(S, T, strict=True)) / len(S) for t in temps
    )
    assert terms["instance"].item() == pytest.approx(instance, rel=1e-9)
    assert terms["batch"].item() == pytest.approx(sum(batch_by_hand(S, T, t) for t in temps), rel=1e-9)
    assert terms["class"].item() == pytest.approx(sum(class_by_hand(S, T, t) for t in temps), rel=1e-9)
    # the levels are distinct numbers here, so a level computed by another level's formula fails above
    assert len({round(v.item(), 9) for v in terms.values()}) == 3
    # identical logits: every level is zero
    assert all(v.item() == pytest.approx(0.0, abs=1e-12) for v in mlld_terms(tensor(S), tensor(S), temps).values())


# --- DIST --------------------------------------------------------------------------------------------------------


def pearson(x, y):
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


def test_dist_inter_and_intra_class_relations():
    tau = 1.0
    ys, yt = probs(S, tau), probs(T, tau)
    inter = 1 - sum(pearson(ys[i], yt[i]) for i in range(len(S))) / len(S)
    intra = 1 - sum(pearson(ys[:, j], yt[:, j]) for j in range(ys.shape[1])) / ys.shape[1]
    got_inter, got_intra = dist_terms(tensor(S), tensor(T), tau)
    assert got_inter.item() == pytest.approx(inter, rel=1e-6) and got_intra.item() == pytest.approx(intra, rel=1e-6)
    # Pearson is invariant to a positive affine change of either side
    a = tensor(S)
    assert pearson_rows(a, 3 * a + 1).tolist() == pytest.approx([1.0] * 3, rel=1e-6)


# --- DML ---------------------------------------------------------------------------------------------------------


def test_dml_each_peer_gets_its_ce_plus_kl_to_the_other_detached():
    s, p = tensor(S, grad=True), tensor(T, grad=True)
    student_loss, peer_loss = mutual_pair_loss(s, p, torch.tensor(LABELS))
    n = len(S)
    want_s = sum(ce(a, y) + kl(softmax(b), softmax(a)) for a, b, y in zip(S, T, LABELS, strict=True)) / n
    want_p = sum(ce(b, y) + kl(softmax(a), softmax(b)) for a, b, y in zip(S, T, LABELS, strict=True)) / n
    assert student_loss.item() == pytest.approx(want_s, rel=1e-9) and peer_loss.item() == pytest.approx(want_p)
    student_loss.backward()
    assert p.grad is None and s.grad.abs().sum() > 0  # the student's loss does not train the peer


# --- C2KD --------------------------------------------------------------------------------------------------------


def kendall_by_hand(x, y):
    pairs = [(i, j) for i in range(len(x)) for j in range(i + 1, len(x))]
    score = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in pairs)
    return score / len(pairs)


def non_target_by_hand(trained, target, y, tau):
    rest_a = softmax([v for j, v in enumerate(trained) if j != y], tau)
    rest_b = softmax([v for j, v in enumerate(target) if j != y], tau)
    return tau**2 * kl(rest_b, rest_a)


def test_kendall_tau_per_sample():
    got = kendall_tau(tensor(S), tensor(T)).tolist()
    assert got == pytest.approx([kendall_by_hand(a, b) for a, b in zip(S, T, strict=True)])
    assert kendall_tau(tensor(S), -tensor(S)).tolist() == pytest.approx([-1.0] * 3)


def test_c2kd_distils_non_target_classes_of_the_selected_samples_only():
    tau = 2.0
    taus = [kendall_by_hand(a, b) for a, b in zip(S, T, strict=True)]
    keep = [t > 0 for t in taus]
    assert any(keep) and not all(keep), "the case must select some samples and drop others"
    chosen = [i for i in range(3) if keep[i]]
    want = sum(non_target_by_hand(S[i], T[i], LABELS[i], tau) for i in chosen) / len(chosen)
    got = selected_non_target_kd(tensor(S), tensor(T), torch.tensor(LABELS), torch.tensor(keep), tau)
    assert got.item() == pytest.approx(want, rel=1e-9)
    none = selected_non_target_kd(tensor(S), tensor(T), torch.tensor(LABELS), torch.tensor([False] * 3), tau)
    assert none.item() == 0.0

    student, teacher = [[0.5, 0.0, 1.0, 0.0]] * 3, [[0.0, 1.0, 0.0, 2.0]] * 3
    terms = c2kd_terms(tensor(student), tensor(teacher), tensor(S), tensor(T), torch.tensor(LABELS), tau)
    n = 3
    assert terms["ce"].item() == pytest.approx(
        sum(ce(a, y) + ce(b, y) for a, b, y in zip(student, teacher, LABELS, strict=True)) / n, rel=1e-9
    )
    proxy = sum(
        tau**2 * (kl(softmax(h, tau), softmax(q, tau)) + kl(softmax(q, tau), softmax(h, tau)))
        for hosts, proxies in ((student, S), (teacher, T))
        for h, q in zip(hosts, proxies, strict=True)
    )
    assert terms["proxy"].item() == pytest.approx(proxy / n, rel=1e-9)
    cross = sum(
        non_target_by_hand(S[i], T[i], LABELS[i], tau) + non_target_by_hand(T[i], S[i], LABELS[i], tau) for i in chosen
    ) / len(chosen)
    assert terms["cross"].item() == pytest.approx(cross, rel=1e-9)
    assert terms["selected"].item() == pytest.approx(len(chosen) / 3)


# --- MGDFR -------------------------------------------------------------------------------------------------------


def test_mgdfr_salience_is_the_mse_increase_when_one_unit_is_permuted():
    rng = np.random.default_rng(0)
    features, weight, bias = rng.normal(size=(6, 3)), rng.normal(size=(2, 3)), rng.normal(size=2)
    weight[:, 2] = 0.0  # unit 2 never reaches the logits: its salience must be 0
    student = rng.normal(size=(6, 2))
    perms = [rng.permutation(6) for _ in range(3)]

    def mse(f):
        logits = f @ weight.T + bias
        return float(np.mean((logits - student) ** 2))

    want = []
    for d in range(3):
        increases = []
        for perm in perms:
            shuffled = features.copy()
            shuffled[:, d] = features[perm, d]
            increases.append(mse(shuffled) - mse(features))
        want.append(sum(increases) / len(increases))
    got = permutation_salience(
        tensor(features), tensor(weight), tensor(bias), tensor(student), [torch.tensor(p) for p in perms]
    )
    assert got.tolist() == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert got[2].item() == pytest.approx(0.0, abs=1e-12)


def test_mgdfr_freezes_the_other_units_to_the_batch_mean_and_cotrains_with_mse():
    f = [[1.0, 2.0, 3.0], [3.0, 6.0, 5.0]]
    frozen = freeze_to_batch_mean(tensor(f), torch.tensor([True, False, True]))
    assert frozen.tolist() == [[1.0, 4.0, 3.0], [3.0, 4.0, 5.0]]
    mse = sum((a - b) ** 2 for ra, rb in zip(S, T, strict=True) for a, b in zip(ra, rb, strict=True)) / (
        len(S) * len(S[0])
    )
    want = sum(ce(a, y) + ce(b, y) for a, b, y in zip(S, T, LABELS, strict=True)) / len(S) + mse
    s, t = tensor(S, grad=True), tensor(T, grad=True)
    loss = cotraining_loss(s, t, torch.tensor(LABELS))
    assert loss.item() == pytest.approx(want, rel=1e-9)
    loss.backward()
    assert s.grad.abs().sum() > 0 and t.grad.abs().sum() > 0  # both nets learn in the co-training
