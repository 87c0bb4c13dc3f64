import numpy as np
import pytest

from medseg.metrics import MetricContract, case_metrics
from medseg.metrics.lesions import label_components, lesion_detection, size_bin, size_bin_names

EDGES = [64.0, 1024.0]


def _hand_built():
    truth = np.zeros((100, 100), dtype=bool)
    pred = np.zeros_like(truth)
    truth[2:5, 2:5] = True  # small, 9 px: found through a single overlapping pixel
    pred[4, 4] = True
    pred[5:7, 5:7] = True  # (same predicted component, touching diagonally below)
    truth[2:4, 20:22] = True  # small, 4 px: missed
    truth[10:20, 40:50] = True  # medium, 100 px: found
    pred[12:18, 42:48] = True
    truth[50:90, 50:90] = True  # large, 1600 px: missed
    pred[30:33, 2:5] = True  # false positive
    return pred, truth


def test_hand_built_counts_by_size_bin():
    pred, truth = _hand_built()
    got = lesion_detection(pred, truth, EDGES)
    assert got == {
        "n_lesions_truth": 4,
        "n_lesions_found": 2,
        "n_lesions_pred": 3,
        "n_pred_matched": 2,
        "n_lesions_truth_small": 2,
        "n_lesions_found_small": 1,
        "n_lesions_truth_medium": 1,
        "n_lesions_found_medium": 1,
        "n_lesions_truth_large": 1,
        "n_lesions_found_large": 0,
    }


def test_case_metrics_carries_lesion_counts():
    pred, truth = _hand_built()
    row = case_metrics(pred.astype(float), truth, MetricContract(lesion_size_bins=EDGES), surface=False)
    assert row["n_lesions_found_small"] == 1 and row["n_lesions_truth_large"] == 1


def test_min_iou():
    truth = np.zeros((10, 10), dtype=bool)
    truth[2:5, 2:5] = True
    pred = np.zeros_like(truth)
    pred[2, 2] = True  # IoU 1/9
    assert lesion_detection(pred, truth, EDGES)["n_lesions_found"] == 1
    strict = lesion_detection(pred, truth, EDGES, min_iou=0.5)
    assert strict["n_lesions_found"] == 0 and strict["n_pred_matched"] == 0
    assert lesion_detection(truth, truth, EDGES, min_iou=1.0)["n_lesions_found"] == 1


def test_one_prediction_covering_two_lesions():
    truth = np.zeros((10, 10), dtype=bool)
    truth[2, 2] = truth[2, 6] = True
    pred = np.zeros_like(truth)
    pred[2, 1:8] = True
    got = lesion_detection(pred, truth, EDGES)
    assert (got["n_lesions_found"], got["n_lesions_pred"], got["n_pred_matched"]) == (2, 1, 1)


def test_full_connectivity_2d_and_3d():
    diag = np.eye(5, dtype=bool)
    assert label_components(diag)[1] == 1
    vol = np.zeros((3, 3, 3), dtype=bool)
    vol[0, 0, 0] = vol[1, 1, 1] = vol[2, 2, 2] = True
    assert label_components(vol)[1] == 1
    apart = np.zeros((5, 5), dtype=bool)
    apart[0, 0] = apart[2, 2] = True
    assert label_components(apart)[1] == 2


def test_bin_edges_follow_the_contract_wording():
    # small < 64 <= medium < 1024 <= large
    assert size_bin(np.array([1, 63, 64, 1023, 1024, 5000]), EDGES).tolist() == [0, 0, 1, 1, 2, 2]


def test_bin_names():
    assert size_bin_names([10.0]) == ["small", "large"]
    assert size_bin_names(EDGES) == ["small", "medium", "large"]
    assert size_bin_names([1.0, 2.0, 3.0]) == ["size0", "size1", "size2", "size3"]


def test_empty_masks():
    z = np.zeros((6, 6), dtype=bool)
    got = lesion_detection(z, z, EDGES)
    assert got["n_lesions_truth"] == got["n_lesions_pred"] == got["n_lesions_found"] == 0


def test_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        lesion_detection(np.zeros((3, 3)), np.zeros((3, 4)), EDGES)


def _reference_detection(pred, truth, min_iou):
    """Independent: every pair of components compared by full-size boolean masks."""
    t_lab, n_t = label_components(truth)
    p_lab, n_p = label_components(pred)
    found, matched = set(), set()
    for i in range(1, n_t + 1):
        for j in range(1, n_p + 1):
            a, b = t_lab == i, p_lab == j
            inter = (a & b).sum()
            if inter and inter / (a | b).sum() >= min_iou:
                found.add(i)
                matched.add(j)
    return n_t, len(found), n_p, len(matched)


@pytest.mark.parametrize("seed", range(6))
def test_truth_labelled_in_its_box_gives_the_whole_volume_answer(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    truth = np.zeros((12, 30, 40), bool)
    for _ in range(3):
        z, y, x = rng.integers(2, 9), rng.integers(3, 24), rng.integers(3, 34)
        truth[z : z + 2, y : y + rng.integers(1, 5), x : x + rng.integers(1, 5)] = True
    pred = rng.random(truth.shape) > 0.97
    pred |= np.roll(truth, int(rng.integers(-1, 2)), axis=2)
    import medseg.metrics.lesions as lesions

    monkeypatch.setattr(lesions, "_AREA_CHUNK", 1000)  # areas summed over several chunks
    out = lesion_detection(pred, truth, EDGES, min_iou=0.2)
    assert (out["n_lesions_truth"], out["n_lesions_found"], out["n_lesions_pred"], out["n_pred_matched"]) == _reference_detection(pred, truth, 0.2)
    # an empty truth: no lesions, every prediction unmatched
    empty = lesion_detection(pred, np.zeros_like(truth), EDGES)
    assert empty["n_lesions_truth"] == 0 and empty["n_pred_matched"] == 0 and empty["n_lesions_pred"] == label_components(pred)[1]


def test_bounding_box():
    from medseg.metrics.lesions import bounding_box

    m = np.zeros((5, 6, 7), bool)
    assert bounding_box(m) is None
    m[1, 2, 3] = m[3, 4, 3] = True
    assert bounding_box(m) == (slice(1, 4), slice(2, 5), slice(3, 4))
    assert bounding_box(m, margin=1) == (slice(0, 5), slice(1, 6), slice(2, 5))
    assert bounding_box(m, margin=9) == (slice(0, 5), slice(0, 6), slice(0, 7))
