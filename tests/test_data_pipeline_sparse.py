"""Sparse labels and pair rules against hand-computed cases and brute force."""
import numpy as np
import pytest

from handprop_jax.data import sparse


def test_labelled_frames_include_first_and_last():
    np.testing.assert_array_equal(sparse.labelled_frames(10, 4), [0, 4, 8, 9])
    np.testing.assert_array_equal(sparse.labelled_frames(9, 4), [0, 4, 8])
    np.testing.assert_array_equal(sparse.labelled_frames(1, 128), [0])
    np.testing.assert_array_equal(sparse.labelled_frames(300, 128), [0, 128, 256, 299])
    with pytest.raises(ValueError, match="stride"):
        sparse.labelled_frames(10, 0)


@pytest.mark.parametrize("length,stride", [(10, 4), (37, 5), (129, 128), (5, 1), (2, 7)])
def test_nearest_labelled_matches_brute_force(length, stride):
    lab = sparse.labelled_frames(length, stride)
    brute = np.array([lab[np.argmin(np.abs(lab - u))] for u in range(length)])  # argmin: earlier on ties
    np.testing.assert_array_equal(sparse.nearest_labelled(length, stride), brute)
    u, s, gap = sparse.eval_pairs(length, stride)
    assert not np.isin(u, lab).any() and len(u) + len(lab) == length
    np.testing.assert_array_equal(s, brute[u])
    np.testing.assert_array_equal(gap, np.abs(u - s))
    assert gap.max(initial=0) <= stride // 2


def test_n_nearest_and_partners():
    # labelled 0 4 8 9 (length 10, K 4)
    expected = [[0, 4, 8], [4, 0, 8], [8, 9, 4], [9, 8, 4]]
    np.testing.assert_array_equal(sparse.n_nearest_labelled(10, 4, 3), expected)
    rng = np.random.default_rng(0)
    partners = {sparse.sample_labelled_partner(rng, 4, 10, 4, 3) for _ in range(200)}
    assert partners == {0, 4, 8}
    with pytest.raises(ValueError, match="not labelled"):
        sparse.sample_labelled_partner(rng, 5, 10, 4, 3)
    # stage 3 with K = 16, gap 8: unlabelled partners within |u - s| < 8, labelled among the 3 nearest
    out = [sparse.sample_stage3_partner(rng, 32, 100, 16, 8, 3, 0.5) for _ in range(400)]
    unl = np.array([u for u, lab in out if not lab])
    labd = {u for u, lab in out if lab}
    assert 150 < len(unl) < 250 and np.all(np.abs(unl - 32) < 8) and not np.isin(unl, [16, 32, 48]).any()
    assert set(unl.tolist()) == set(range(25, 40)) - {32}
    assert labd == {16, 32, 48}
    # no unlabelled frame at all (K = 1): falls back to a labelled partner
    assert all(lab for _, lab in (sparse.sample_stage3_partner(rng, 2, 5, 1, 4, 3, 1.0) for _ in range(20)))


def test_n_nearest_labelled_matches_brute_force():
    """The windowed table equals sorting all labelled frames by (distance, frame) for every row."""
    for length, stride, n in [(10, 4, 3), (11, 4, 1), (37, 3, 5), (40, 7, 20), (5, 1, 2), (64, 16, 8)]:
        lab = sparse.labelled_frames(length, stride)
        want = np.array([sorted(lab, key=lambda f, s=s: (abs(int(f) - int(s)), int(f)))[:min(n, len(lab))]
                         for s in lab])
        np.testing.assert_array_equal(sparse.n_nearest_labelled(length, stride, n), want,
                                      err_msg=f"{length} {stride} {n}")
        rows = np.array([len(lab) - 1, 0])
        np.testing.assert_array_equal(sparse.n_nearest_labelled(length, stride, n, rows=rows), want[rows])


def test_own_labels_with_holes_in_time():
    """has_label (own sparse labels) and frame_time together: S_V keeps labels >= K source frames
    apart, and N(u), the gaps, the stage-3 window and the stage-2 partners are measured in time."""
    times = np.array([0, 1, 2, 4, 5, 6, 9, 10, 12])  # source frames 3, 7, 8 and 11 are missing
    has = np.zeros(9, bool)
    has[[0, 2, 3, 5, 6, 8]] = True  # times 0, 2, 4, 6, 9, 12
    lab = sparse.select_labelled(has, 4, times)
    np.testing.assert_array_equal(lab, [0, 3, 6, 8])  # times 0, 4, 9 and the last, 12
    np.testing.assert_array_equal(sparse.select_labelled(has, 4), [0, 5, 8])  # on positions it differs
    lab2, scored = sparse.label_sets(9, 4, has, times)
    np.testing.assert_array_equal(lab2, lab)
    np.testing.assert_array_equal(scored, [2, 5])
    nb = sparse.neighbours(9, lab, times)
    assert nb["nearest"][[2, 5]].tolist() == [0, 3] and nb["gap"][[2, 5]].tolist() == [2, 2]
    np.testing.assert_array_equal(sparse.unlabelled_window(3, 9, 4, 3, labelled=lab, times=times), [2, 4, 5])
    rng = np.random.default_rng(0)
    partners = {sparse.sample_labelled_partner(rng, 6, 9, 4, 2, labelled=lab, times=times) for _ in range(50)}
    assert partners == {6, 8}
    np.testing.assert_array_equal(sparse.select_labelled(np.ones(9, bool), 4, times),
                                  sparse.labelled_frames(9, 4, times))


def test_video_table_reads_frame_time_or_falls_back_to_the_index():
    """Records of a data set built before ``frame_time`` existed (key absent, or None where the current
    spec reads an older file) use the frame index; stored times are kept (a hole at frame 2)."""
    from handprop_jax.data.videos import video_table

    def recs(time):
        return [{"video_id": 0, "frame_index": f, "video_length": 4, "video_name": b"v", **time(f)}
                for f in (2, 0, 3, 1)]  # stored out of order

    for old in (lambda f: {}, lambda f: {"frame_time": None}):
        table = video_table(recs(old))
        np.testing.assert_array_equal(table.times(0), [0, 1, 2, 3])
    table = video_table(recs(lambda f: {"frame_time": [0, 1, 3, 4][f]}))
    np.testing.assert_array_equal(table.times(0), [0, 1, 3, 4])
    np.testing.assert_array_equal(table.record[table.starts[0]:][:4], [1, 3, 0, 2])
