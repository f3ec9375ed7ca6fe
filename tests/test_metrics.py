"""Metrics against independent references: hand-worked examples, sklearn, mmseg's definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, confusion_matrix

from partbench.errors import MetricInputError
from partbench.metrics import (
    ConfusionMatrix,
    average_precision,
    bootstrap_ci,
    class_mean_ap,
    mean_iou,
    retrieval_ap,
    top1_accuracy,
)

# --- retrieval: hand-worked --------------------------------------------------------------------


def test_average_precision_ties_hand_worked():
    # scores 0.9 > 0.8 = 0.8 > 0.1, positives at ranks 1 and 3 (rank 2 tied with 3).
    # sklearn's thresholds: 0.9 -> P=1, R=1/2; 0.8 (tie group of 2) -> P=2/3, R=1.
    # AP = 1/2 * 1 + 1/2 * 2/3 = 5/6. (Breaking the tie in the positive's favour would give 1.)
    scores = torch.tensor([[0.9, 0.8, 0.8, 0.1]])
    pos = torch.tensor([[True, False, True, False]])
    assert average_precision(scores, pos).item() == pytest.approx(5 / 6, abs=1e-12)
    assert average_precision_score([1, 0, 1, 0], [0.9, 0.8, 0.8, 0.1]) == pytest.approx(5 / 6)


def test_retrieval_ap_hand_worked_study_and_clean():
    # Two classes on the unit circle: class 0 at angles 0 and 10 deg, class 1 at 90 and 100 deg.
    ang = np.deg2rad([0.0, 10.0, 90.0, 100.0])
    feats = np.stack([np.cos(ang), np.sin(ang)], 1)
    labels = np.array([0, 0, 1, 1])
    # study: each query ranks itself first, then its class mate (nearest): AP = 1 for all.
    study = retrieval_ap(feats, labels, protocol="study")
    assert study.ap == pytest.approx(1.0) and study.map == pytest.approx(1.0)
    # clean, query 1 (10 deg): others at 0 (sim cos10), 90 (cos80), 100 (cos90). Class mate first: 1.
    # Query 2 (90 deg): 100 (cos10, positive) first -> 1. All four are 1 again.
    assert retrieval_ap(feats, labels, protocol="clean").ap == pytest.approx(1.0)
    # Move item 3 to 40 deg: query 3 (label 1, 40 deg) ranks 10 deg (neg, cos30), 0 (neg, cos40),
    # 90 (pos, cos50): clean AP = 1/3; study AP = (1 + 2/4) / 2 = 0.75 (itself first, then rank 4).
    ang = np.deg2rad([0.0, 10.0, 90.0, 40.0])
    feats = np.stack([np.cos(ang), np.sin(ang)], 1)
    assert retrieval_ap(feats, labels, protocol="clean").per_query[3] == pytest.approx(1 / 3)
    assert retrieval_ap(feats, labels, protocol="study").per_query[3] == pytest.approx(0.75)


# --- retrieval: against sklearn, with ties -----------------------------------------------------


def _sklearn_reference(feats: np.ndarray, labels: np.ndarray, clean: bool) -> np.ndarray:
    """One sklearn call per query, as the study's script did. Row-wise dot products keep exact ties."""
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    out = []
    for i in range(len(feats)):
        scores = (unit[i] * unit).sum(1)
        y = labels == labels[i]
        if clean:
            keep = np.arange(len(feats)) != i
            scores, y = scores[keep], y[keep]
        out.append(average_precision_score(y, scores))
    return np.array(out)


@pytest.fixture(scope="module")
def tied_features() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(240, 12))
    feats[120:160] = feats[0:40]  # exact duplicates: tied scores for every query
    feats[200:210] = feats[7] * 2.0  # same direction, other norm (x2 is exact): tied cosines too
    feats[:, 0] += np.repeat([0.0, 0.3, 0.6, 0.9], 60)  # some class signal
    labels = rng.integers(0, 4, size=240)
    labels[100] = 7  # a class of one: fine under study
    labels[101] = 7
    return feats, labels


@pytest.mark.parametrize("protocol", ["study", "clean"])
@pytest.mark.parametrize("chunk_size", [None, 1, 37])
def test_retrieval_ap_matches_sklearn_loop(tied_features, protocol, chunk_size):
    feats, labels = tied_features
    ref = _sklearn_reference(feats, labels, clean=protocol == "clean")
    res = retrieval_ap(torch.tensor(feats), labels, protocol=protocol, chunk_size=chunk_size)
    np.testing.assert_allclose(res.per_query, ref, rtol=0, atol=1e-9)
    assert res.ap == pytest.approx(ref.mean(), abs=1e-12)
    per_class = {int(c): ref[labels == c].mean() for c in np.unique(labels)}
    assert res.per_class == pytest.approx(per_class, abs=1e-12)
    assert res.map == pytest.approx(np.mean(list(per_class.values())), abs=1e-12)
    assert class_mean_ap(res.per_query, labels) == pytest.approx(res.map, abs=1e-12)


def test_retrieval_ap_float32_close_to_float64(tied_features):
    feats, labels = tied_features
    r64 = retrieval_ap(feats, labels)
    r32 = retrieval_ap(feats.astype(np.float32), labels)
    assert r32.ap == pytest.approx(r64.ap, abs=1e-4)


def test_retrieval_study_is_above_clean(tied_features):
    feats, labels = tied_features
    assert retrieval_ap(feats, labels, "study").ap > retrieval_ap(feats, labels, "clean").ap


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_retrieval_ap_cuda_matches_cpu(tied_features):
    feats, labels = tied_features
    cpu = retrieval_ap(torch.tensor(feats), labels, protocol="clean")
    gpu = retrieval_ap(torch.tensor(feats).cuda(), torch.tensor(labels).cuda(), protocol="clean")
    np.testing.assert_allclose(gpu.per_query, cpu.per_query, atol=1e-9)


# --- retrieval: bad inputs ---------------------------------------------------------------------


def test_retrieval_rejects_nan_features():
    feats = np.ones((4, 3))
    feats[2, 1] = np.nan
    with pytest.raises(MetricInputError, match="row 2"):
        retrieval_ap(feats, [0, 0, 1, 1])


def test_retrieval_rejects_label_count_mismatch():
    with pytest.raises(MetricInputError, match="expected 4 labels"):
        retrieval_ap(np.ones((4, 3)), [0, 1, 1])


def test_retrieval_clean_rejects_single_item_class():
    feats = np.random.default_rng(1).normal(size=(5, 3))
    with pytest.raises(MetricInputError, match="class 9 has a single item"):
        retrieval_ap(feats, [0, 0, 9, 1, 1], protocol="clean")
    assert retrieval_ap(feats, [0, 0, 9, 1, 1], protocol="study").per_class[9] == 1.0


def test_retrieval_rejects_unknown_protocol():
    with pytest.raises(ValueError, match="protocol"):
        retrieval_ap(np.ones((2, 2)), [0, 0], protocol="fast")


# --- top-1 -------------------------------------------------------------------------------------


def test_top1_accuracy_logits_and_predictions():
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert top1_accuracy(logits, [1, 1, 1]) == pytest.approx(2 / 3)
    assert top1_accuracy(np.array([2, 0, 1, 1]), np.array([2, 0, 0, 1])) == pytest.approx(0.75)
    with pytest.raises(MetricInputError, match="does not match"):
        top1_accuracy(logits, [1, 1])


# --- segmentation: hand-worked -----------------------------------------------------------------


def test_mean_iou_hand_worked_with_absent_classes():
    # 4 classes. Class 2 is predicted but never labelled; class 3 appears nowhere.
    label = np.array([[0, 0, 1], [1, 1, 255]])
    pred = np.array([[0, 1, 1], [1, 2, 3]])  # the 255 pixel (pred 3) is ignored
    # Confusion (rows label, cols pred): label 0 -> {0:1, 1:1}; label 1 -> {1:2, 2:1}.
    # I = [1, 2, 0, 0]; L = [2, 3, 0, 0]; P = [1, 3, 1, 0]; U = L + P - I = [2, 4, 1, 0].
    r = mean_iou(pred, label, num_classes=4)
    np.testing.assert_allclose(r.iou[:3], [0.5, 0.5, 0.0])
    assert np.isnan(r.iou[3])  # absent from both: NaN, skipped by the nanmean
    np.testing.assert_allclose(r.acc[:2], [0.5, 2 / 3])
    assert np.isnan(r.acc[2]) and np.isnan(r.acc[3])  # absent from the label: NaN acc
    assert r.miou == pytest.approx((0.5 + 0.5 + 0.0) / 3)  # class 2 counts with IoU 0
    assert r.macc == pytest.approx((0.5 + 2 / 3) / 2)
    assert r.aacc == pytest.approx(3 / 5)


def test_mean_iou_reduce_zero_label_maps_label_only():
    # reduce_zero_label: label 0 -> ignored, k -> k-1; pred untouched (it is already 0-based).
    label = np.array([0, 1, 2, 2, 255, 3])
    pred = np.array([2, 0, 1, 0, 0, 2])
    # kept pixels: labels [0, 1, 1, 2], preds [0, 1, 0, 2]. I=[1,1,1]; L=[1,2,1]; P=[2,1,1]; U=[2,2,1]
    r = mean_iou(pred, label, num_classes=3, reduce_zero_label=True)
    np.testing.assert_allclose(r.iou, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(r.acc, [1.0, 0.5, 1.0])
    assert r.aacc == pytest.approx(3 / 4)


def test_mean_iou_lists_tensors_and_accumulator_agree():
    rng = np.random.default_rng(3)
    preds = [rng.integers(0, 5, size=(7, 9)) for _ in range(3)]
    labels = [rng.integers(0, 6, size=(7, 9)) for _ in range(3)]
    labels = [np.where(t == 5, 255, t) for t in labels]
    as_list = mean_iou(preds, labels, num_classes=5)
    as_tensor = mean_iou(torch.tensor(np.stack(preds)), torch.tensor(np.stack(labels)), num_classes=5)
    cm = ConfusionMatrix(5, per_image=True)
    cm.update(np.stack(preds[:2]), np.stack(labels[:2]))
    cm.update(preds[2], labels[2])
    np.testing.assert_allclose(as_list.iou, as_tensor.iou)
    np.testing.assert_allclose(cm.result().iou, as_list.iou)
    assert cm.per_image_areas().shape == (3, 3, 5)
    np.testing.assert_allclose(cm.per_image_areas().sum(0), cm.areas())
    # independent reference: sklearn's confusion matrix on the kept pixels
    p, t = np.concatenate([x.ravel() for x in preds]), np.concatenate([x.ravel() for x in labels])
    keep = t != 255
    m = confusion_matrix(t[keep], p[keep], labels=range(5))
    inter = np.diag(m)
    np.testing.assert_allclose(as_list.iou, inter / (m.sum(0) + m.sum(1) - inter))
    assert as_list.aacc == pytest.approx(inter.sum() / m.sum())


def test_segmentation_label_out_of_range():
    with pytest.raises(MetricInputError, match=r"label: value 7 outside the class range 0\.\.3"):
        mean_iou(np.zeros(3, dtype=int), np.array([0, 7, 255]), num_classes=4)
    with pytest.raises(MetricInputError, match="differs from label shape"):
        mean_iou(np.zeros(3, dtype=int), np.zeros(4, dtype=int), num_classes=4)


# --- bootstrap ---------------------------------------------------------------------------------


def test_bootstrap_ci_contains_estimate_and_is_reproducible():
    values = np.random.default_rng(5).uniform(size=400)
    lo, hi = bootstrap_ci(values, n=500, seed=1)
    assert lo < values.mean() < hi
    assert (lo, hi) == bootstrap_ci(values, n=500, seed=1)
    assert (lo, hi) != bootstrap_ci(values, n=500, seed=2)
    # the interval of a mean of uniforms shrinks like 1/sqrt(n): ~ 2 * 1.96 * 0.2887 / 20 = 0.057
    assert 0.04 < hi - lo < 0.075


def test_bootstrap_ci_joint_resampling_for_map(tied_features):
    feats, labels = tied_features
    res = retrieval_ap(feats, labels)
    lo, hi = bootstrap_ci((res.per_query, res.labels), class_mean_ap, n=200, seed=0)
    assert lo <= res.map <= hi


def test_confusion_matrix_bootstrap_contains_miou():
    rng = np.random.default_rng(4)
    label = rng.integers(0, 3, size=(20, 8, 8))
    pred = np.where(rng.uniform(size=label.shape) < 0.7, label, rng.integers(0, 3, size=label.shape))
    cm = ConfusionMatrix(3, per_image=True)
    cm.update(pred, label)
    ci = cm.bootstrap(n=200, seed=0)
    r = cm.result()
    assert ci["mIoU"][0] <= r.miou <= ci["mIoU"][1]
    assert ci["aAcc"][0] <= r.aacc <= ci["aAcc"][1]
    assert ci == cm.bootstrap(n=200, seed=0)


def test_retrieval_single_class_database():
    # every item is a positive: each query's AP is 1 under both protocols (no negatives at all)
    feats = np.random.default_rng(2).normal(size=(6, 4))
    assert retrieval_ap(feats, np.zeros(6, dtype=int), "study").ap == pytest.approx(1.0)
    assert retrieval_ap(feats, np.zeros(6, dtype=int), "clean").ap == pytest.approx(1.0)


@pytest.mark.parametrize("use_numpy", [True, False])  # False: the torch code path CUDA tensors take
def test_sorted_row_helpers_both_paths(use_numpy):
    from partbench.metrics import _first_of_ties, _sort_rows

    x = torch.tensor([[2.0, 0.0, 3.0, 2.0, 0.0, 2.0, 1.0], [5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0]])
    srt = _sort_rows(x, use_numpy=use_numpy)
    assert srt.tolist() == [[0, 0, 1, 2, 2, 2, 3], [-1, 0, 1, 2, 3, 4, 5]]
    assert _first_of_ties(srt, use_numpy=use_numpy).tolist() == [[0, 0, 2, 3, 3, 3, 6], list(range(7))]
