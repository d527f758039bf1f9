"""``pairloss cv``: fold discovery (LETOR rotation), the fold runs, cv.json, the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pairloss.cli import app
from pairloss.ltr.api import REPORT_METRICS, InputError
from pairloss.ltr.config import TrainConfig
from pairloss.ltr.cv import cross_validate, find_folds, load_fold_splits

QUICK = TrainConfig(epochs=2, patience=None)


def _partition_text(part: int, n_queries: int = 6, seed: int = 0) -> str:
    rng = np.random.default_rng([seed, part])
    lines = []
    for q in range(n_queries):
        for _ in range(int(rng.integers(3, 7))):
            ranks = rng.integers(1, 200, 3)
            label = int(ranks[0] < 60) + int(ranks[1] < 40)
            values = ["NULL" if rng.random() < 0.3 else str(r) for r in ranks]
            lines.append(f"{label} qid:{part * 100 + q} " + " ".join(f"{j + 1}:{v}" for j, v in enumerate(values)))
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def partitions(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("letor")
    for i in range(1, 6):
        (root / f"S{i}.txt").write_text(_partition_text(i))
    return root


def test_partitions_rotate_as_letor_does(partitions: Path) -> None:
    folds = find_folds(partitions)
    table = [(f.name, [p.stem for p in f.train], f.vali.stem, f.test.stem) for f in folds]
    assert table == [
        ("Fold1", ["S1", "S2", "S3"], "S4", "S5"),
        ("Fold2", ["S2", "S3", "S4"], "S5", "S1"),
        ("Fold3", ["S3", "S4", "S5"], "S1", "S2"),
        ("Fold4", ["S4", "S5", "S1"], "S2", "S3"),
        ("Fold5", ["S5", "S1", "S2"], "S3", "S4"),
    ]
    train, vali, test = load_fold_splits(folds[0])
    assert train.n_sessions == 18 and vali.n_sessions == test.n_sessions == 6
    assert np.isnan(train.features).any()  # NULL is missing


def test_fold_directories_are_found_in_numeric_order(tmp_path: Path) -> None:
    for i in (1, 2, 10):
        fold = tmp_path / f"Fold{i}"
        fold.mkdir()
        for name in ("train", "vali", "test"):
            (fold / f"{name}.txt").write_text(_partition_text(i))
    with pytest.raises(ValueError, match=r"numbered 1\.\.K without gaps; found \[1, 2, 10\]"):
        find_folds(tmp_path)
    (tmp_path / "Fold10").rename(tmp_path / "Fold3")
    assert [f.name for f in find_folds(tmp_path)] == ["Fold1", "Fold2", "Fold3"]
    (tmp_path / "Fold2" / "vali.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"Fold2 lacks its vali file"):
        find_folds(tmp_path)


def test_a_directory_without_folds_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "S1.txt").write_text(_partition_text(1))
    with pytest.raises(ValueError, match=r"holds neither fold directories Fold1\.\.FoldK nor partitions"):
        find_folds(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        find_folds(tmp_path / "nope")
    with pytest.raises(InputError, match="unknown folds"):
        cross_validate(QUICK, _three_partitions(tmp_path), tmp_path / "out", folds=["Fold9"])


def _three_partitions(root: Path) -> Path:
    d = root / "three"
    d.mkdir(exist_ok=True)
    for i in range(1, 4):
        (d / f"S{i}.txt").write_text(_partition_text(i, n_queries=4))
    return d


def test_cross_validate_writes_every_fold_and_the_summary(partitions: Path, tmp_path: Path) -> None:
    seen = []
    report = cross_validate(QUICK, partitions, tmp_path / "cv", jobs=1, progress=lambda *a: seen.append(a))
    assert [f.name for f in report.folds] == [f"Fold{i}" for i in range(1, 6)]
    assert ("Fold3", 2, 2) == seen[5][:3] and len(seen) == 10
    summary = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert summary["metrics"] == list(REPORT_METRICS) and len(summary["folds"]) == 5
    test_ndcg = [f["test"]["ndcg@10"] for f in summary["folds"]]
    assert summary["mean"]["test"]["ndcg@10"] == pytest.approx(np.mean(test_ndcg))
    assert summary["stderr"]["test"]["ndcg@10"] == pytest.approx(np.std(test_ndcg, ddof=1) / np.sqrt(5))
    assert summary["folds"][1]["sources"]["test"].endswith("S1.txt")
    fold_run = json.loads((tmp_path / "cv" / "Fold1" / "metrics.json").read_text())
    assert fold_run["test"] == summary["folds"][0]["test"] and fold_run["valid_report"] == summary["folds"][0]["valid"]


def test_parallel_folds_give_the_sequential_result(tmp_path: Path) -> None:
    data = _three_partitions(tmp_path)
    one = cross_validate(QUICK, data, tmp_path / "one", jobs=1)
    two = cross_validate(QUICK, data, tmp_path / "two", jobs=2)
    assert two.jobs == 2 and [f.test for f in two.folds] == [f.test for f in one.folds]


def test_cv_command_prints_folds_and_mean(tmp_path: Path) -> None:
    data = _three_partitions(tmp_path)
    result = CliRunner().invoke(app, ["cv", str(data), "--out", str(tmp_path / "cv"), "--jobs", "1", "--epochs", "1",
                                      "--fold", "Fold2", "--no-progress", "--transform", "none"])
    assert result.exit_code == 0, result.output
    assert "Fold2" in result.output and "Fold1" not in result.output and "mean ± se" in result.output
    summary = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert summary["config"]["epochs"] == 1 and summary["config"]["transform"] == "none"
    assert f"{summary['folds'][0]['test']['ndcg@10']:.4f}" in result.output


def test_cv_command_errors_are_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["cv", str(tmp_path), "--no-progress"])
    assert result.exit_code == 1 and result.output.startswith("error: DIR: ") and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["cv", str(_three_partitions(tmp_path)), "--fold", "Fold7"])
    assert result.exit_code == 1 and result.output.startswith("error: --fold: unknown folds ['Fold7']")
