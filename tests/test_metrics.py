"""Retrieval metrics and protocols: hand-computed cases, ties, exclusions, chunked == unchunked."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpmt.errors import BPMTError, DataError
from bpmt.evaluation.metrics import evaluate_ranking, pairwise_distances, rank_in_chunks
from bpmt.evaluation.protocols import (fold_split, label_of, leave_one_out, load_folds, mean_std,
                                       official_protocol)

from conftest import FOLDS


def approx(result: dict, **expected) -> None:
    for key, value in expected.items():
        assert result[key] == pytest.approx(value), key


# ---------------------------------------------------------------------------------------------
# Distances


def test_euclidean_matches_direct_formula():
    rng = np.random.default_rng(0)
    queries, gallery = rng.normal(size=(5, 7)), rng.normal(size=(9, 7))
    direct = np.sqrt(((queries[:, None] - gallery[None]) ** 2).sum(-1))
    np.testing.assert_allclose(pairwise_distances(queries, gallery, "euc"), direct, atol=1e-12)
    np.testing.assert_allclose(pairwise_distances(queries, gallery, "euc", chunk_size=2), direct, atol=1e-12)


def test_euclidean_is_float64_safe_and_never_negative():
    # float32 inputs far from the origin: the |q|^2 + |g|^2 - 2 q.g form cancels badly in float32.
    base = np.full((1, 64), 1e4, dtype=np.float32)
    points = np.concatenate([base, base + np.float32(0.5)])
    distances = pairwise_distances(points, points)
    assert distances.dtype == np.float64
    assert np.all(distances >= 0) and np.all(np.isfinite(distances))
    np.testing.assert_allclose(np.diag(distances), 0.0, atol=1e-6)
    assert distances[0, 1] == pytest.approx(0.5 * np.sqrt(64), rel=1e-6)


def test_cosine_distance_values_and_scale_invariance():
    queries = np.array([[1.0, 0.0]])
    gallery = np.array([[3.0, 0.0], [0.0, 2.0], [-1.0, 0.0], [1.0, 1.0]])
    expected = [[0.0, 1.0, 2.0, 1.0 - 1.0 / np.sqrt(2.0)]]
    np.testing.assert_allclose(pairwise_distances(queries, gallery, "cos"), expected, atol=1e-12)
    np.testing.assert_allclose(pairwise_distances(7 * queries, gallery, "cos"), expected, atol=1e-12)


def test_cosine_and_euclidean_can_disagree():
    # g0 points the same way as the query but is far; g1 is near but turned away.
    # Euclidean: |q-g0| = 9, |q-g1| = 0.51 -> g1 first (wrong identity) -> Rank-1 0.
    # Cosine:    d(g0) = 0, d(g1) = 1 - 0.9/1.0296 = 0.126 -> g0 first (right identity) -> Rank-1 100.
    queries = np.array([[1.0, 0.0]])
    gallery = np.array([[10.0, 0.0], [0.9, 0.5]])
    labels_q, labels_g = np.array([0]), np.array([0, 1])
    assert rank_in_chunks(queries, gallery, labels_q, labels_g, metric="euc")["rank1"] == 0.0
    assert rank_in_chunks(queries, gallery, labels_q, labels_g, metric="cos")["rank1"] == 100.0


def test_unknown_metric_is_rejected():
    with pytest.raises(ValueError, match="unknown metric"):
        pairwise_distances(np.zeros((1, 2)), np.zeros((1, 2)), "l1")


# ---------------------------------------------------------------------------------------------
# Ranking metrics, by hand


def test_hand_computed_cmc_ap_inp():
    gallery_labels = np.array([1, 0, 1, 0, 1])
    distances = np.array([
        # query 0 (label 0): sorted labels 1 0 1 0 1 -> matches at positions 2 and 4.
        #   first match 2 -> Rank-1 miss, Rank-5 hit; AP = (1/2 + 2/4) / 2 = 0.5; INP = 2/4 = 0.5
        [0.1, 0.2, 0.3, 0.4, 0.5],
        # query 1 (label 1): sorted g4 g3 g2 g1 g0 = labels 1 0 1 0 1 -> matches at 1, 3, 5.
        #   Rank-1 hit; AP = (1/1 + 2/3 + 3/5) / 3 = 0.755556; INP = 3/5 = 0.6
        [0.5, 0.4, 0.3, 0.2, 0.1],
        # query 2 (label 7): no true match in the gallery -> excluded from every metric.
        [0.1, 0.1, 0.1, 0.1, 0.1],
    ])
    result = evaluate_ranking(distances, np.array([0, 1, 7]), gallery_labels)
    # Rank-1 = 1/2, Rank-5 = Rank-10 = 2/2, mAP = (0.5 + 0.755556)/2, mINP = (0.5 + 0.6)/2
    approx(result, rank1=50.0, rank5=100.0, rank10=100.0, mAP=100 * (0.5 + (1 + 2 / 3 + 3 / 5) / 3) / 2,
           mINP=55.0, queries=2)
    assert set(result) == {"rank1", "rank5", "rank10", "mAP", "mINP", "queries"}


def test_perfect_ranking_scores_100():
    distances = np.array([[0.1, 0.2, 0.9], [0.8, 0.9, 0.1]])
    result = evaluate_ranking(distances, np.array(["a", "b"]), np.array(["a", "a", "b"]))
    approx(result, rank1=100.0, rank5=100.0, mAP=100.0, mINP=100.0, queries=2)


def test_ties_keep_gallery_order():
    # All distances equal: the stable sort keeps gallery order, so the match's position is its index.
    distances = np.ones((1, 3))
    # labels 1 0 1 -> match at position 2: Rank-1 0, AP = 1/2, INP = 1/2
    approx(evaluate_ranking(distances, np.array([0]), np.array([1, 0, 1])),
           rank1=0.0, rank5=100.0, mAP=50.0, mINP=50.0)
    # labels 0 1 1 -> match at position 1: everything 100
    approx(evaluate_ranking(distances, np.array([0]), np.array([0, 1, 1])),
           rank1=100.0, mAP=100.0, mINP=100.0)


def test_partial_ties_only_reorder_equal_distances():
    # sorted: g2 (0.1), then the tie g0 = g1 (0.5) in gallery order, then g3 (0.9)
    # labels g2=1, g0=1, g1=0, g3=0 -> matches of query label 0 at positions 3 and 4
    # AP = (1/3 + 2/4) / 2 = 0.416667; INP = 2/4
    result = evaluate_ranking(np.array([[0.5, 0.5, 0.1, 0.9]]), np.array([0]), np.array([1, 0, 1, 0]))
    approx(result, rank1=0.0, rank5=100.0, mAP=100 * (1 / 3 + 2 / 4) / 2, mINP=50.0)


def test_ignore_mask_removes_entries_before_ranking():
    distances = np.array([[0.1, 0.2, 0.3]])
    labels_q, labels_g = np.array([0]), np.array([0, 1, 0])
    # without the mask: match at 1 and 3 -> AP = (1 + 2/3)/2, INP = 2/3
    approx(evaluate_ranking(distances, labels_q, labels_g), rank1=100.0, mAP=100 * (1 + 2 / 3) / 2,
           mINP=100 * 2 / 3)
    # ignoring g0: kept list g1 (1), g2 (0) -> match at position 2 -> AP = 1/2, INP = 1/2
    ignore = np.array([[True, False, False]])
    approx(evaluate_ranking(distances, labels_q, labels_g, ignore=ignore), rank1=0.0, mAP=50.0, mINP=50.0)
    # ignoring both matches leaves the query without a true match: no query counts -> error
    with pytest.raises(BPMTError, match="no query has a true match"):
        evaluate_ranking(distances, labels_q, labels_g, ignore=np.array([[True, False, True]]))


def test_queries_without_match_do_not_dilute_metrics():
    distances = np.array([[0.1, 0.2], [0.1, 0.2]])
    with_orphan = evaluate_ranking(distances, np.array([0, 9]), np.array([0, 1]))
    alone = evaluate_ranking(distances[:1], np.array([0]), np.array([0, 1]))
    assert with_orphan == alone
    assert with_orphan["queries"] == 1


def test_custom_ranks():
    result = evaluate_ranking(np.array([[0.1, 0.2, 0.3]]), np.array([0]), np.array([1, 1, 0]), ranks=(2, 3))
    assert result["rank2"] == 0.0 and result["rank3"] == 100.0


def test_shape_errors():
    with pytest.raises(ValueError, match="query_labels"):
        evaluate_ranking(np.zeros((2, 3)), np.array([0]), np.array([0, 0, 0]))
    with pytest.raises(ValueError, match="ignore"):
        evaluate_ranking(np.zeros((1, 3)), np.array([0]), np.array([0, 0, 0]), ignore=np.zeros((1, 2), bool))


# ---------------------------------------------------------------------------------------------
# Chunked == unchunked


@st.composite
def retrieval_problems(draw):
    num_queries = draw(st.integers(1, 12))
    num_gallery = draw(st.integers(1, 15))
    dim = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    num_labels = draw(st.integers(1, 5))
    rng = np.random.default_rng(seed)
    # Small integers: many exact ties, and exact float64 arithmetic in every chunking.
    queries = rng.integers(-2, 3, size=(num_queries, dim)).astype(np.float64)
    gallery = rng.integers(-2, 3, size=(num_gallery, dim)).astype(np.float64)
    query_labels = rng.integers(0, num_labels, num_queries)
    gallery_labels = rng.integers(0, num_labels, num_gallery)
    query_labels[0] = gallery_labels[0]       # at least one query has a match
    return queries, gallery, query_labels, gallery_labels, draw(st.integers(1, num_queries + 2))


@settings(max_examples=150, deadline=None)
@given(retrieval_problems())
def test_chunked_equals_unchunked_with_ties(problem):
    queries, gallery, query_labels, gallery_labels, chunk_size = problem
    full = evaluate_ranking(pairwise_distances(queries, gallery), query_labels, gallery_labels)
    assert rank_in_chunks(queries, gallery, query_labels, gallery_labels, chunk_size=chunk_size) == full


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 9), st.sampled_from(["euc", "cos"]))
def test_chunked_equals_unchunked_with_ignore(seed, chunk_size, metric):
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(14, 3))
    labels = rng.integers(0, 4, 14)
    ignore = rng.random((14, 14)) < 0.3
    ignore[np.arange(14), np.arange(14)] = True
    full = evaluate_ranking(pairwise_distances(embeddings, embeddings, metric), labels, labels, ignore=ignore)
    chunked = rank_in_chunks(embeddings, embeddings, labels, labels, metric=metric, chunk_size=chunk_size,
                             ignore_fn=lambda rows: ignore[rows])
    assert chunked == full


# ---------------------------------------------------------------------------------------------
# Protocols


def test_label_of():
    assert label_of("0012-camid3_videoid2-seq1") == "0012"


def test_leave_one_out_excludes_self():
    # 1-D embeddings 0, 0.3, 0.4, 5 with labels a a b c.
    # q0 (a): others by distance g1 a (.3), g2 b (.4), g3 c -> match at 1: AP 1, INP 1
    # q1 (a): g2 b (.1), g0 a (.3), g3 c -> match at 2: AP 1/2, INP 1/2
    # q2 (b), q3 (c): no other sequence of their identity -> excluded
    embeddings = np.array([[0.0], [0.3], [0.4], [5.0]])
    result = leave_one_out(embeddings, ["a", "a", "b", "c"])
    approx(result, rank1=50.0, rank5=100.0, mAP=75.0, mINP=75.0, queries=2)


def test_leave_one_out_chunk_size_does_not_matter():
    rng = np.random.default_rng(3)
    embeddings, labels = rng.normal(size=(25, 4)), rng.integers(0, 6, 25).astype(str)
    assert leave_one_out(embeddings, labels, chunk_size=4) == leave_one_out(embeddings, labels)


def test_official_protocol_splits_probes_from_gallery():
    names = ["0001-camid1_videoid1-seq0", "0001-camid2_videoid1-seq0", "0001-camid3_videoid1-seq0",
             "0002-camid1_videoid1-seq0", "0002-camid2_videoid1-seq0", "0003-camid1_videoid1-seq0"]
    embeddings = np.array([[0.0], [0.1], [3.0], [2.0], [10.0], [20.0]])
    probes = [names[0], names[1], names[3], names[5], "0099-camid1_videoid1-seq0"]
    # gallery = names 2 (id 1, at 3.0) and 4 (id 2, at 10.0); the other probes are not in it.
    # probe 0 (id 1, 0.0): g2 (3) first -> hit.  probe 1 (id 1, 0.1): g2 first -> hit.
    # probe 3 (id 2, 2.0): g2 (1.0) before g4 (8.0) -> match at 2: AP 1/2, INP 1/2.
    # probe 5 (id 3): no gallery sequence of id 3 -> excluded; "0099" is absent -> ignored.
    result = official_protocol(embeddings, names, probes)
    approx(result, rank1=100 * 2 / 3, rank5=100.0, mAP=100 * 2.5 / 3, mINP=100 * 2.5 / 3, queries=3)


def test_official_protocol_needs_a_probe():
    with pytest.raises(BPMTError, match="none of the 1 probe"):
        official_protocol(np.zeros((2, 1)), ["0001-c-s0", "0001-c-s1"], ["0005-c-s0"])


# ---------------------------------------------------------------------------------------------
# Folds


def test_load_folds_shared_file():
    if not FOLDS.is_file():
        pytest.skip("shared folds file absent")
    folds = load_folds(FOLDS)
    assert len(folds) == 4 and sum(len(f) for f in folds) == 38
    train, test = fold_split(folds, 2)
    assert test == folds[2] and not set(train) & set(test)
    assert sorted(train + test) == sorted(i for f in folds for i in f)


def test_load_folds_rejects_overlap_and_bad_files(tmp_path):
    path = tmp_path / "folds.json"
    path.write_text(json.dumps({"folds": [["0001", "0002"], ["0002"]]}))
    with pytest.raises(DataError, match="'0002' is in fold 0 and fold 1"):
        load_folds(path)
    path.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_folds(path)
    with pytest.raises(DataError, match="not found"):
        load_folds(tmp_path / "missing.json")
    with pytest.raises(BPMTError, match="fold 5 does not exist"):
        fold_split([["a"], ["b"]], 5)


def test_mean_std_uses_sample_std():
    summary = mean_std([{"rank1": 50.0, "queries": 10}, {"rank1": 60.0, "queries": 12}])
    assert summary["rank1"]["mean"] == pytest.approx(55.0)
    assert summary["rank1"]["std"] == pytest.approx(np.std([50, 60], ddof=1))
