"""The training-free floor on the development protocol (DESIGN.md §3).

For each identity-disjoint fold: hand-crafted features (`bpmt.models.handcrafted`) of every
sequence, standardised with the statistics of the other folds' sequences, then leave-one-out
retrieval (Euclidean) among the held-out fold's sequences. Prints per-fold results and
mean ± std (sample std over folds); `--json OUT` writes them.

Chance is far from zero on these folds (a few identities own half of a fold's sequences), so the
script also scores random embeddings (`--chance-draws` Gaussian draws per fold, averaged).

    python benchmarks/protocol_floor.py                       # extracts the shipped tarball
    python benchmarks/protocol_floor.py --data PREPARED_CACHE --json floor.json
    python benchmarks/protocol_floor.py --lda       # plus a learned linear metric (LDA) on the same features
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from bpmt.data.corpus import PoseCorpus
from bpmt.data.source import open_data
from bpmt.errors import BPMTError
from bpmt.models.handcrafted import corpus_features, lda_embeddings, standardize
from bpmt.evaluation.protocols import fold_split, leave_one_out, load_folds, mean_std
from bpmt.evaluation.report import format_folds

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TARBALL = SHARED / "gait3d-2d-poses-38ids.tar.gz"
FOLDS = SHARED / "gait3d-38ids-folds.json"
COLUMNS = ("rank1", "rank5", "mAP", "mINP", "queries")


def floor_fold(corpus: PoseCorpus, features: np.ndarray, folds: list[list[str]], k: int,
               lda: bool = False) -> dict:
    """Leave-one-out metrics of fold `k`; `features (S, D)` are the raw features of `corpus`.

    `lda`: project with Fisher's discriminant fitted on the training identities (a learned metric)."""
    train_ids, test_ids = fold_split(folds, k)
    subjects = np.array(corpus.subjects)
    train, test = np.isin(subjects, train_ids), np.isin(subjects, test_ids)
    if not test.any():
        raise BPMTError(f"fold {k}: none of its identities is in the data")
    if lda:
        embeddings = lda_embeddings(features[train], subjects[train], features[test])
    else:
        embeddings = standardize(features[train], features[test])
    return leave_one_out(embeddings, subjects[test], metric="euc")


def chance_fold(corpus: PoseCorpus, folds: list[list[str]], k: int, draws: int,
                rng: np.random.Generator) -> dict:
    """Leave-one-out metrics of fold `k` for random embeddings, averaged over `draws` draws."""
    subjects = np.array(corpus.subjects)
    labels = subjects[np.isin(subjects, fold_split(folds, k)[1])]
    results = [leave_one_out(rng.normal(size=(len(labels), 16)), labels) for _ in range(draws)]
    return {key: value["mean"] for key, value in mean_std(results).items()}


def run_floor(corpus: PoseCorpus, folds: list[list[str]], chance_draws: int = 20, seed: int = 0,
              lda: bool = False) -> dict:
    features = corpus_features(corpus)
    per_fold = [floor_fold(corpus, features, folds, k) for k in range(len(folds))]
    result = {"per_fold": per_fold, "summary": mean_std(per_fold), "feature_dim": int(features.shape[1]),
              "sequences": len(corpus), "identities": len(corpus.identities)}
    if lda:
        learned = [floor_fold(corpus, features, folds, k, lda=True) for k in range(len(folds))]
        result["lda"] = {"per_fold": learned, "summary": mean_std(learned)}
    if chance_draws > 0:
        rng = np.random.default_rng(seed)
        chance = [chance_fold(corpus, folds, k, chance_draws, rng) for k in range(len(folds))]
        result["chance"] = {"per_fold": chance, "summary": mean_std(chance), "draws": chance_draws}
    return result


def lda_member_cost(corpus: PoseCorpus) -> dict:
    """Time the LDA member of an ensemble (`ensemble.lda`): fitting it on the whole corpus
    (as at export) and embedding every sequence (as at test time), features included, best of 3."""
    from bpmt.models.ensemble import HandcraftedLDA

    member = HandcraftedLDA(len(corpus.identities))
    fit = embed = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        member.fit(corpus_features(corpus), corpus.subjects)
        fit = min(fit, time.perf_counter() - start)
        start = time.perf_counter()
        member(corpus_features(corpus))
        embed = min(embed, time.perf_counter() - start)
    return {"sequences": len(corpus), "mean_frames": float(np.mean(corpus.lengths)), "fit_seconds": fit,
            "embed_ms_per_sequence": 1000 * embed / len(corpus)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="Gait3D 2D_Poses folder or prepared cache "
                                       "(default: extract the shipped tarball to a temporary folder)")
    parser.add_argument("--folds", default=str(FOLDS), help="folds JSON (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="parser processes for raw folders")
    parser.add_argument("--chance-draws", type=int, default=20,
                        help="random-embedding draws per fold for the chance row; 0 skips it (default: %(default)s)")
    parser.add_argument("--json", dest="json_out", help="write the results to this JSON file")
    parser.add_argument("--lda", action="store_true",
                        help="also score the features projected by Fisher's discriminant fitted on the "
                             "training identities (a learned linear metric on the same numbers)")
    args = parser.parse_args(argv)

    try:
        folds = load_folds(args.folds)
        ids = [identity for fold in folds for identity in fold]
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="bpmt-floor-") as tmp:
            data = args.data
            if data is None:
                if not TARBALL.is_file():
                    raise BPMTError(f"{TARBALL}: not found; pass --data")
                with tarfile.open(TARBALL) as tar:
                    tar.extractall(tmp, filter="data")
                data = Path(tmp) / "Gait3D" / "2D_Poses"
            corpus, _ = open_data(data, ids, workers=args.workers)
            result = run_floor(corpus, folds, chance_draws=args.chance_draws, lda=args.lda)
            if args.lda:
                result["lda"]["cost"] = lda_member_cost(corpus)
        result["seconds"] = round(time.perf_counter() - start, 1)
    except BPMTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    print(f"training-free floor: {result['sequences']} sequences, {result['identities']} identities, "
          f"{len(folds)} folds, {result['feature_dim']}-d features, leave-one-out, Euclidean")
    print(format_folds(result["per_fold"], result["summary"], columns=COLUMNS))
    if "lda" in result:
        print("\nthe same features through Fisher's discriminant fitted on the training identities (shrinkage 0.3):")
        print(format_folds(result["lda"]["per_fold"], result["lda"]["summary"], columns=COLUMNS))
        cost = result["lda"]["cost"]
        print(f"as an ensemble's LDA member (ensemble.lda): fitting on all {cost['sequences']} sequences "
              f"{cost['fit_seconds']:.2f} s, embedding {cost['embed_ms_per_sequence']:.2f} ms per sequence "
              f"({cost['mean_frames']:.0f} frames on average; one core)")
    if "chance" in result:
        print(f"\nchance (random embeddings, mean of {args.chance_draws} draws per fold):")
        print(format_folds(result["chance"]["per_fold"], result["chance"]["summary"], columns=COLUMNS))
    if args.json_out:
        result.update(data=str(args.data or TARBALL), folds=str(args.folds))
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
