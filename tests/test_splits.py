import numpy as np

from mstcli.data.splits import reference_permutations, split_permutation


def test_permutations_match_the_reference_generator():
    n = 37
    np.random.seed(19980427)
    expected = [np.random.permutation(n) for _ in range(20)]
    got = reference_permutations(n)
    assert got.shape == (20, n)
    for g in range(20):
        np.testing.assert_array_equal(got[g], expected[g])


def test_split_is_60_20_20_disjoint_and_complete():
    perm = reference_permutations(101)[3]
    parts = split_permutation(perm)
    assert [len(parts[s]) for s in ("train", "val", "test")] == [60, 20, 21]
    joined = np.concatenate([parts["train"], parts["val"], parts["test"]])
    np.testing.assert_array_equal(joined, perm)
    assert len(set(joined.tolist())) == 101
