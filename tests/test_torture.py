"""The torture run at small N, through the benchmark's own torture mode: the real detector and the
shipped model on generated photos mixed with every kind of bad file, then a SIGKILLed run and a re-run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow  # by default: every bad kind as one error row (test_scoring), recovery from a run killed mid-commit
# (test_scoring, test_current_table), a signal mid-run (test_signals); this is all of them on the real model at once
def test_torture_run_scores_every_good_file_once_records_every_bad_one_and_survives_sigkill(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from corpus import build_corpus
        from score import parse_args, torture
    finally:
        sys.path.remove(str(BENCHMARKS))

    corpus = build_corpus(tmp_path / "corpus", n=24, seed=7, large_share=0.1)
    args = parse_args(["--n", "100", "--seed", "7", "--shard-size", "8"])
    result = torture(corpus, tmp_path, args)
    assert result["rows"] == result["files"] > 24  # one images row per file, good or bad
    assert result["files_not_as_expected"] == []
    assert result["first_run"]["status"]["error"] == result["bad_files"] >= 9
    assert result["every_image_once"], result
    assert result["tmp_files_left"] == []
