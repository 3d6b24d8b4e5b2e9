"""`bpmt score EMB.npz`: protocols, output formats and clear errors on bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bpmt.cli import main
from bpmt.evaluation.protocols import label_of, leave_one_out, official_protocol

NAMES = ["0001-camid1_videoid1-seq0", "0001-camid2_videoid1-seq0", "0001-camid3_videoid1-seq0",
         "0002-camid1_videoid1-seq0", "0002-camid2_videoid1-seq0", "0003-camid1_videoid1-seq0",
         "0003-camid2_videoid1-seq0"]
PROBES = [NAMES[0], NAMES[3], NAMES[5]]
KEYS = {"rank1", "rank5", "rank10", "mAP", "mINP", "queries"}


@pytest.fixture
def embeddings() -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = {"0001": 0.0, "0002": 3.0, "0003": 6.0}
    return np.array([[centres[label_of(n)] + rng.normal(scale=0.8), rng.normal()] for n in NAMES])


@pytest.fixture
def emb_file(tmp_path, embeddings):
    path = tmp_path / "emb.npz"
    np.savez(path, embeddings=embeddings.astype(np.float32), seqs=np.array(NAMES))
    return path


@pytest.fixture
def split_file(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"TRAIN_SET": [], "TEST_SET": ["0001", "0002", "0003"], "PROBE_SET": PROBES}))
    return path


def run_json(capsys, *argv) -> dict:
    assert main(["score", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_default_is_leave_one_out_without_split(capsys, emb_file, embeddings):
    result = run_json(capsys, emb_file)
    assert list(result) == ["loo"] and set(result["loo"]) == KEYS
    expected = leave_one_out(embeddings.astype(np.float32), [label_of(n) for n in NAMES])
    assert result["loo"] == pytest.approx(expected)
    assert result["loo"]["queries"] == len(NAMES)


def test_both_protocols_with_split(capsys, emb_file, split_file, embeddings):
    result = run_json(capsys, emb_file, "--split", split_file)
    assert list(result) == ["official", "loo"]
    assert result["official"] == pytest.approx(official_protocol(embeddings.astype(np.float32), NAMES, PROBES))
    assert result["official"]["queries"] == 3


def test_single_protocol_and_metric(capsys, emb_file, split_file):
    result = run_json(capsys, emb_file, "--split", split_file, "--protocol", "official", "--metric", "cos")
    assert list(result) == ["official"]


def test_table_output(capsys, emb_file, split_file):
    assert main(["score", str(emb_file), "--split", str(split_file)]) == 0
    out = capsys.readouterr().out
    assert "7 sequences, 3 identities" in out
    for word in ("Rank-1", "Rank-5", "Rank-10", "mAP", "mINP", "official", "loo"):
        assert word in out


def test_official_needs_split(capsys, emb_file):
    assert main(["score", str(emb_file), "--protocol", "official"]) == 2
    assert "needs --split" in capsys.readouterr().err


@pytest.fixture
def foreign_split(tmp_path):
    """A split whose probes are none of the embedded sequences (embeddings of a subset)."""
    path = tmp_path / "other.json"
    probes = ["0999-camid1_videoid1-seq0", "0998-camid2_videoid1-seq0", "0997-camid1_videoid1-seq0",
              "0996-camid1_videoid1-seq0"]
    path.write_text(json.dumps({"TRAIN_SET": [], "TEST_SET": [], "PROBE_SET": probes}))
    return path


def test_official_without_probes_is_a_clear_error(capsys, emb_file, foreign_split):
    assert main(["score", str(emb_file), "--split", str(foreign_split), "--protocol", "official"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "none of the 4 probe sequences" in err and "emb.npz" in err
    # the example names probes that are missing, not sequences that are there
    assert "0999-camid1_videoid1-seq0" in err and "0998-camid2_videoid1-seq0" in err
    assert not any(name in err for name in NAMES)


@pytest.mark.parametrize("protocol", [[], ["--protocol", "both"]])
def test_both_protocols_fall_back_to_leave_one_out_without_probes(capsys, emb_file, foreign_split, embeddings,
                                                                  protocol):
    assert main(["score", str(emb_file), "--split", str(foreign_split), *protocol, "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert list(result) == ["loo"]
    assert result["loo"] == pytest.approx(leave_one_out(embeddings.astype(np.float32), [label_of(n) for n in NAMES]))
    assert captured.err.startswith("warning:") and "official protocol" in captured.err
    assert "not scored" in captured.err and "0999-camid1_videoid1-seq0" in captured.err
    assert main(["score", str(emb_file), "--split", str(foreign_split), *protocol]) == 0
    captured = capsys.readouterr()
    assert "loo" in captured.out and "official" not in captured.out and "not scored" in captured.err


@pytest.mark.parametrize("arrays, message", [
    ({"embeddings": np.zeros((2, 3))}, "missing array(s) seqs"),
    ({"embeddings": np.zeros((3, 3)), "seqs": np.array(NAMES[:2])}, "3 embeddings but 2 sequence names"),
    ({"embeddings": np.zeros(3), "seqs": np.array(NAMES[:3])}, "2-D numeric"),
    ({"embeddings": np.array([[0.0], [np.nan]]), "seqs": np.array(NAMES[:2])}, "NaN or inf"),
    ({"embeddings": np.zeros((2, 1)), "seqs": np.array([NAMES[0]] * 2)}, "appears 2 times"),
    ({"embeddings": np.zeros((2, 1)), "seqs": np.array(NAMES[:2], dtype=object)}, "object array"),
])
def test_bad_npz_names_the_file(capsys, tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    assert main(["score", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bad.npz" in err and message in err


def test_missing_and_unreadable_files(capsys, tmp_path):
    assert main(["score", str(tmp_path / "none.npz")]) == 2
    assert "not found" in capsys.readouterr().err
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    assert main(["score", str(junk)]) == 2
    assert "junk.npz: not an .npz archive" in capsys.readouterr().err
    plain = tmp_path / "plain.npz"
    with open(plain, "wb") as handle:
        np.save(handle, np.zeros((2, 3)))       # a bare .npy under an .npz name
    assert main(["score", str(plain)]) == 2
    assert "plain.npz: not an .npz archive" in capsys.readouterr().err
