"""The development-protocol benchmark end to end on synthetic walkers (tiny model, two folds)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_TRAIN

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_protocol_writes_results_plots_and_the_ablation_table(serving_synth, tmp_path, capsys):
    protocol, ablation = load("protocol"), load("ablation_table")
    folds = tmp_path / "folds.json"
    folds.write_text(json.dumps([[f"{i:04d}" for i in range(4)], [f"{i:04d}" for i in range(4, 8)]]))
    out, result = tmp_path / "runs", tmp_path / "tiny.json"
    args = ["--config", str(ROOT / "configs" / "tiny.yaml"), "--data", str(serving_synth), "--folds", str(folds),
            "--out", str(out), "--only-folds", "1", "--json", str(result), *TINY_TRAIN, "stages=[phase1,finetune]"]
    assert protocol.main(args) == 0
    data = json.loads(result.read_text())
    assert data["folds"] == [1] and len(data["runs"]) == 1
    run = data["runs"][0]
    assert len(run["cmc"]) == 20 and run["cmc"][0] == run["rank1"] and run["cmc"] == sorted(run["cmc"])
    assert 0 <= run["mAP"] <= 100 and run["queries"] == 12
    run_dir = out / "tiny" / "seed0-fold1"
    for plot in ("cmc.png", "phase1/loss.png", "finetune/loss.png"):
        assert (run_dir / plot).stat().st_size > 1000, plot
    assert len(data["floor"]["runs"]) == 1
    fused = run["fused"]                                # the model fused with the LDA baseline
    assert 0 <= fused["mAP"] <= 100 and fused["rank1"] == data["fused_with_lda"]["summary"]["rank1"]["mean"]
    printed = capsys.readouterr().out
    assert "the network alone" in printed and "tiny + LDA ensemble" in printed

    weights = (run_dir / "model.safetensors").read_bytes()
    assert protocol.main(args) == 0                     # a finished run is reused, not retrained
    assert (run_dir / "model.safetensors").read_bytes() == weights
    assert json.loads(result.read_text())["summary"] == data["summary"]

    capsys.readouterr()
    assert ablation.main([str(result), "--plot", str(tmp_path / "ablation.png")]) == 0
    assert (tmp_path / "ablation.png").stat().st_size > 1000
    rows = capsys.readouterr().out.splitlines()
    assert rows[2].startswith("| tiny | `tiny.yaml` `phase1.steps=3` ") and "| 1 |" in rows[2] and f"{run['rank1']:.1f} ± 0.0" in rows[2]
    fused_cells = f"{fused['rank1']:.1f} ± 0.0 / {fused['mAP']:.1f} ± 0.0"
    assert rows[2].endswith(f"| {fused_cells} |")
    assert rows[3].startswith("| training-free floor |") and rows[3].endswith("| — |")

    # Test-time read-outs of the same trained run: the default row reproduces the protocol's figures.
    readout = load("readout")
    read_outs = tmp_path / "readout.json"
    assert readout.main(["--runs", str(out / "tiny"), "--data", str(serving_synth), "--folds", str(folds),
                           "--threads", "1", "--json", str(read_outs)]) == 0
    variants = json.loads(read_outs.read_text())["variants"]
    assert variants["chunked (default)"]["runs"][0] == {c: run[c] for c in ("rank1", "rank5", "mAP", "mINP")}
    assert set(variants) == {"chunked (default)", "whole", "pre-BN", "whole, pre-BN", "no flip"}

    # A second seed of the same variant: K independently seeded networks, embeddings averaged.
    # (Its model carries the LDA member, so the labelled `K=n + LDA` rows are scored too.)
    seed1 = tmp_path / "seed1-real.json"
    assert protocol.main([*args[:args.index("--json")], "--json", str(seed1), *TINY_TRAIN,
                          "stages=[phase1,finetune]", "ensemble.lda=true", "--seeds", "1"]) == 0
    ensemble_json = tmp_path / "seeds.json"
    assert load("seed_ensemble").main(["--runs", str(out / "tiny"), "--data", str(serving_synth), "--folds",
                                       str(folds), "--threads", "1", "--json", str(ensemble_json)]) == 0
    rows = json.loads(ensemble_json.read_text())["rows"]
    second = json.loads(seed1.read_text())["runs"][0]
    assert abs(rows["K=1"]["folds"][0]["rank1"] - (run["rank1"] + second["rank1"]) / 2) < 1e-9
    assert set(rows) == {"K=1", "K=2", "K=1 + LDA", "K=2 + LDA"}
    from bpmt.data.source import open_data
    from bpmt.engine.export import load_recognizer
    from bpmt.evaluation.evaluate import embed_corpus
    from bpmt.evaluation.protocols import leave_one_out
    test = open_data(serving_synth)[0].select_ids([f"{i:04d}" for i in range(4, 8)])
    both = []
    for seed in (0, 1):
        model, cfg, _, _ = load_recognizer(out / "tiny" / f"seed{seed}-fold1")
        e = embed_corpus(model, cfg, test, ensemble=False)
        both.append(e / np.linalg.norm(e, axis=1, keepdims=True))
    expected = leave_one_out((both[0] + both[1]) / 2, test.subjects)
    assert abs(rows["K=2"]["folds"][0]["mAP"] - expected["mAP"]) < 1e-6
    from bpmt.models.handcrafted import corpus_features, fuse_embeddings
    lda = model.lda(corpus_features(test))                                # seed 1's model: an LDA ensemble
    fused_both = leave_one_out(fuse_embeddings((both[0] + both[1]) / 2, lda), test.subjects)
    assert abs(rows["K=2 + LDA"]["folds"][0]["mAP"] - fused_both["mAP"]) < 1e-6
    assert rows["K=2 + LDA"]["folds"][0]["mAP"] != rows["K=2"]["folds"][0]["mAP"]

    # Two invocations of one variant (here: the same fold under two seed labels) merge into one table.
    merge = load("protocol_merge")
    other = json.loads(result.read_text())
    other["runs"][0]["label"], other["seeds"] = "s1 f1", [1]
    other["runs"][0]["rank1"] = run["rank1"] + 10
    (tmp_path / "seed1.json").write_text(json.dumps(other))
    assert merge.main([str(result), str(tmp_path / "seed1.json"), "--json", str(tmp_path / "both.json")]) == 0
    both = json.loads((tmp_path / "both.json").read_text())
    assert both["seeds"] == [0, 1] and len(both["runs"]) == 2
    assert abs(both["summary"]["rank1"]["mean"] - (run["rank1"] + 5)) < 1e-9
    with pytest.raises(SystemExit, match="appears twice"):
        merge.merge([data, data])
    fold0 = {**other, "folds": [0], "runs": [{**other["runs"][0], "label": "s1 f0"}],
             "floor": {"runs": [{**data["floor"]["runs"][0], "rank1": 1.0}], "summary": {}}}
    joined = merge.merge([data, fold0])                 # other folds: the floor is joined per fold
    assert joined["folds"] == [0, 1] and [r["rank1"] for r in joined["floor"]["runs"]] == [
        1.0, data["floor"]["runs"][0]["rank1"]]

    # Every fold's run can start from a checkpoint trained elsewhere (`bpmt train --init`).
    init_json = tmp_path / "from-init.json"
    assert protocol.main([*args[:args.index("--json")], "--json", str(init_json), *TINY_TRAIN,
                          "stages=[finetune]", "--name", "from-init", "--init", str(run_dir)]) == 0
    started = json.loads((out / "from-init" / "seed0-fold1" / "meta.json").read_text())["init"]
    assert started["checkpoint"] == str((run_dir / "finetune" / "weights.safetensors").resolve())
    assert json.loads(init_json.read_text())["init"] == str(run_dir)
    with pytest.raises(SystemExit, match="another variant"):
        merge.merge([json.loads(init_json.read_text()), {**json.loads(init_json.read_text()), "init": None,
                                                         "runs": []}])
    with pytest.raises(SystemExit, match="another variant"):
        merge.merge([data, {**other, "overrides": [*other["overrides"], "model.dim=8"]}])


def test_ablation_table_refuses_files_it_cannot_compare(tmp_path, capsys):
    ablation = load("ablation_table")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert ablation.main([str(bad)]) == 2
    assert f"{bad}: not a benchmarks/protocol.py result" in capsys.readouterr().err
    base = {"name": "a", "config": "c.yaml", "overrides": [], "runs": [], "summary": {}, "floor": {}}
    (tmp_path / "a.json").write_text(json.dumps({**base, "folds": [0]}))
    (tmp_path / "b.json").write_text(json.dumps({**base, "folds": [1]}))
    assert ablation.main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    assert "different folds" in capsys.readouterr().err


FAKE_REFERENCE = '''
import argparse, os, sys, numpy as np, torch
p = argparse.ArgumentParser(); p.add_argument("train"); p.add_argument("test"); p.add_argument("out")
p.add_argument("--steps", type=int, default=1500); p.add_argument("--seed", type=int, default=0)
p.add_argument("--train-ids"); p.add_argument("--test-ids"); a = p.parse_args()
torch.set_num_threads(2)                       # as the real reference does
train = open(a.train_ids).read().split(); test = open(a.test_ids).read().split()
assert not set(train) & set(test), "train and test identities overlap"
with open(os.path.join(os.path.dirname(a.out), "calls.txt"), "a") as log:
    log.write(f"{torch.get_num_threads()} {a.seed} {a.steps} {len(train)}\\n")
names, embs = [], []
for s in sorted(os.listdir(a.test)):
    if s not in test:
        continue
    for c in sorted(os.listdir(f"{a.test}/{s}")):
        for q in sorted(os.listdir(f"{a.test}/{s}/{c}")):
            names.append(f"{s}-{c}-{q}")
            e = np.zeros(8); e[int(s) % 8] = 1.0; e[(int(s) + 1) % 8] += 1.2 * (q == "seq0")
            embs.append(e)
np.savez(a.out, embeddings=np.array(embs), seqs=np.array(names))
'''


def test_reference_runs_per_fold_with_its_threads_and_scores_leave_one_out(tmp_path, capsys):
    from bpmt.evaluation.protocols import leave_one_out

    poses = tmp_path / "2D_Poses"
    for identity in ["0001", "0002", "0003", "0004", "0005", "0006"]:
        for q in range(2 + int(identity) % 3):          # 2-4 sequences per identity
            (poses / identity / "camid0_videoid1" / f"seq{q}").mkdir(parents=True)
    folds = tmp_path / "folds.json"
    folds.write_text(json.dumps({"folds": [["0001", "0002", "0003"], ["0004", "0005", "0006"]]}))
    script = tmp_path / "fake_reference.py"
    script.write_text(FAKE_REFERENCE)
    reference = load("reference")
    args = ["--script", str(script), "--data", str(poses), "--folds", str(folds), "--seeds", "3",
            "--threads", "1", "--steps", "7", "--out", str(tmp_path / "runs"), "--json", str(tmp_path / "r.json")]
    assert reference.main(args) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert [(r["seed"], r["fold"]) for r in result["runs"]] == [(3, 0), (3, 1)]
    for fold, ids in enumerate([["0001", "0002", "0003"], ["0004", "0005", "0006"]]):
        # the expected figures, from the fake's embeddings scored independently of the script
        names = [f"{i}-camid0_videoid1-seq{q}" for i in ids for q in range(2 + int(i) % 3)]
        embs = []
        for name in names:
            s, q = int(name[:4]), int(name[-1])
            e = np.zeros(8); e[s % 8] = 1.0; e[(s + 1) % 8] += 1.2 * (q == 0)
            embs.append(e)
        expected = leave_one_out(np.array(embs), [n[:4] for n in names])
        run = result["runs"][fold]
        assert run["sequences"] == 9 and 0 < expected["rank1"] < 100
        for key in ("rank1", "mAP", "mINP"):
            assert run[key] == pytest.approx(expected[key])
    calls = [(tmp_path / "runs" / f"seed3-fold{k}" / "calls.txt").read_text().split() for k in range(2)]
    assert calls == [["1", "3", "7", "3"], ["1", "3", "7", "3"]]     # 1 thread kept, seed and steps passed
    # a rerun reuses the finished runs: the script is not called again
    assert reference.main(args) == 0
    assert [(tmp_path / "runs" / f"seed3-fold{k}" / "calls.txt").read_text().count("\n") for k in range(2)] == [1, 1]
    assert "mean ± std" in capsys.readouterr().out


def test_learning_curve_trains_nested_identity_subsets_and_fits_the_error(serving_synth, tmp_path, capsys):
    curve = load("learning_curve")
    folds = tmp_path / "folds.json"
    folds.write_text(json.dumps([[f"{i:04d}" for i in range(4)], [f"{i:04d}" for i in range(4, 8)]]))
    out, result, png = tmp_path / "runs", tmp_path / "lc.json", tmp_path / "lc.png"
    args = ["--config", str(ROOT / "configs" / "tiny.yaml"), "--data", str(serving_synth), "--folds", str(folds),
            "--sizes", "2,3,all", "--seeds", "0", "--out", str(out), "--json", str(result), "--plot", str(png),
            *TINY_TRAIN, "stages=[finetune]"]
    assert curve.main(args) == 0
    data = json.loads(result.read_text())
    runs = data["runs"]
    assert [(r["fold"], r["identities"]) for r in runs] == [(0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (1, 4)]
    for fold in (0, 1):
        chosen = [r["ids"] for r in runs if r["fold"] == fold]
        assert chosen[0] == chosen[1][:2] and chosen[1] == chosen[2][:3]          # nested subsets
        held_out = {f"{i:04d}" for i in range(4 * fold, 4 * fold + 4)}
        assert not held_out & set(chosen[2]) and len(set(chosen[2])) == 4          # the fold's training ids
    # each run trained on exactly its subset: the model's classifier has one class per identity
    from bpmt.engine.export import load_recognizer
    assert load_recognizer(out / "2ids" / "seed0-fold1")[0].head.classifier.out_features == 2
    # the LDA column is the LDA baseline on the same subset, recomputed here independently
    from bpmt.data.source import open_data
    from bpmt.evaluation.protocols import leave_one_out
    from bpmt.models.handcrafted import corpus_features, lda_embeddings
    corpus, _ = open_data(serving_synth)
    features, subjects = corpus_features(corpus), np.array(corpus.subjects)
    run = runs[4]                                                                  # fold 1, 3 identities
    train_rows, test_rows = np.isin(subjects, run["ids"]), np.isin(subjects, [f"{i:04d}" for i in range(4, 8)])
    expected = leave_one_out(lda_embeddings(features[train_rows], subjects[train_rows], features[test_rows]),
                             subjects[test_rows])
    assert run["lda"]["rank1"] == pytest.approx(expected["rank1"]) and run["lda"]["mAP"] == pytest.approx(expected["mAP"])
    # the per-size table averages its runs; the fit is a power law on the error and stays below 100
    row = data["table"]["network"][1]
    assert row["size"] == "3" and row["summary"]["mAP"]["mean"] == pytest.approx(
        np.mean([r["network"]["mAP"] for r in runs if r["identities"] == 3]))
    fit = data["fits"]["lda"]["mAP"]
    assert fit["value_at"] < 100 and fit["value_at"] == pytest.approx(100 - fit["c"] * 3000 ** fit["b"])
    assert png.stat().st_size > 1000 and "EXTRAPOLATED" in capsys.readouterr().out
    weights = (out / "3ids" / "seed0-fold0" / "model.safetensors").read_bytes()
    assert curve.main(args) == 0                                                   # finished runs are reused
    assert (out / "3ids" / "seed0-fold0" / "model.safetensors").read_bytes() == weights
    with pytest.raises(SystemExit, match="5 identities"):
        curve.main([*args[:args.index("--sizes")], "--sizes", "5", *args[args.index("--sizes") + 2:]])
