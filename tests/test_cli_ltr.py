"""The learning-to-rank commands (train / evaluate / predict) driven through Typer's CliRunner."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import dump_svmlight_file
from typer.testing import CliRunner

import pairloss.ltr.api as ltr_api
from pairloss.cli import app, train_command
from pairloss.ltr import RankingDataset, TrainConfig, load, load_model, make_toy_dataset
from pairloss.ltr.api import REPORT_METRICS
from pairloss.ltr.metrics import evaluate

runner = CliRunner()
QUICK = ["--epochs", "2", "--no-progress"]


def write_svmlight(data: RankingDataset, path: Path) -> Path:
    dump_svmlight_file(data.features, data.labels, str(path), zero_based=True, query_id=data.qids)
    return path


def write_lightgbm(data: RankingDataset, path: Path) -> Path:
    dump_svmlight_file(data.features, data.labels, str(path), zero_based=True)
    Path(f"{path}.query").write_text("".join(f"{n}\n" for n in data.lengths.tolist()))
    return path


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def toy() -> tuple[RankingDataset, RankingDataset, RankingDataset]:
    return make_toy_dataset()  # what `pairloss train` uses without --data


@pytest.fixture(scope="module")
def toy_files(toy, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toy")
    train, valid, test = toy
    return {
        "train": write_svmlight(train, root / "train.svm"),
        "valid": write_svmlight(valid, root / "valid.svm"),
        "test": write_lightgbm(test, root / "test.lgb"),  # LightGBM layout: test.lgb + test.lgb.query
    }


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("run") / "toy"
    result = invoke("train", *QUICK, "--epochs", "3", "--out", out)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_train_without_arguments_runs_end_to_end(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 0, result.output
    assert "epoch 1/40" in result.output  # the progress bar
    for label in ("NDCG@1 ", "NDCG@3 ", "NDCG@5 ", "NDCG@10", "MAP", "MRR"):
        assert label in result.output
    assert "Test metrics on built-in synthetic data" in result.output
    (run,) = (tmp_path / "runs").iterdir()  # runs/<timestamp>
    assert {p.name for p in run.iterdir()} == {"best.pt", "checkpoint.pt", "metrics.json", "curves.png"}
    summary = json.loads((run / "metrics.json").read_text())
    assert list(summary["test"]) == list(REPORT_METRICS)
    assert summary["test"]["ndcg@10"] > 0.85  # the default MLP learns the toy data within seconds
    assert f"{summary['test']['ndcg@10']:.4f}" in result.output


def test_train_report_matches_the_model_and_evaluate(trained_run, toy, toy_files, tmp_path: Path) -> None:
    out, output = trained_run
    summary = json.loads((out / "metrics.json").read_text())
    assert f"{summary['test']['ndcg@10']:.4f}" in output
    _, _, test = toy
    model = load_model(out / "best.pt")
    with torch.no_grad():
        scores = model(torch.from_numpy(test.features)).double().numpy()
    expected = evaluate(scores, test.labels, test.lengths, REPORT_METRICS, exclude_all_equal=True)
    np.testing.assert_allclose([summary["test"][m] for m in REPORT_METRICS], [expected[m] for m in REPORT_METRICS])

    json_path = tmp_path / "eval.json"
    result = invoke("evaluate", out, "--data", toy_files["test"], "--metric", "ndcg@10", "--metric", "map",
                    "--json", json_path)
    assert result.exit_code == 0, result.output
    assert "NDCG@10" in result.output and "MAP" in result.output and "MRR" not in result.output
    report = json.loads(json_path.read_text())
    assert list(report["metrics"]) == ["ndcg@10", "map"] and report["n_sessions"] == test.n_sessions
    assert report["metrics"]["ndcg@10"] == pytest.approx(expected["ndcg@10"])
    assert report["model"] == str(out / "best.pt")

    linear = invoke("evaluate", out / "best.pt", "--data", toy_files["test"], "--gain", "linear",
                    "--include-all-equal", "--metric", "ndcg@10", "--json", json_path)
    assert linear.exit_code == 0, linear.output
    plain = evaluate(scores, test.labels, test.lengths, ["ndcg@10"], gain="linear")["ndcg@10"]
    assert json.loads(json_path.read_text())["metrics"]["ndcg@10"] == pytest.approx(plain)


def test_predict_writes_one_score_per_line(trained_run, toy, toy_files, tmp_path: Path) -> None:
    out, _ = trained_run
    _, _, test = toy
    scores_path = tmp_path / "scores.txt"
    result = invoke("predict", out / "best.pt", "--data", toy_files["test"], "--out", scores_path)
    assert result.exit_code == 0, result.output
    lines = scores_path.read_text().splitlines()
    assert len(lines) == test.n_items
    with torch.no_grad():
        expected = load_model(out / "best.pt")(torch.from_numpy(test.features)).numpy()
    np.testing.assert_allclose(np.array(lines, dtype=float), expected, rtol=1e-6)
    to_stdout = invoke("predict", out, "--data", toy_files["test"])
    assert to_stdout.exit_code == 0 and to_stdout.output.splitlines() == lines


def test_train_on_files_and_on_a_fold(toy_files, toy, tmp_path: Path) -> None:
    out = tmp_path / "files"
    result = invoke("train", *QUICK, "--data", toy_files["train"], "--valid", toy_files["valid"],
                    "--test", toy_files["test"], "--model", "mlp", "--hidden", "8", "--loss", "hinge",
                    "--optimizer", "sgd", "--lr", "0.05", "--margin", "0.5", "--l1", "1e-4", "--l2", "1e-4",
                    "--batch-size", "16", "--patience", "0", "--gain", "linear", "--seed", "3", "--out", out)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "metrics.json").read_text())
    config = summary["config"]
    assert (config["model"], config["hidden"], config["loss"], config["optimizer"]) == ("mlp", [8], "pairwise_hinge",
                                                                                         "sgd")
    assert (config["lr"], config["margin"], config["l1"], config["sessions_per_batch"]) == (0.05, 0.5, 1e-4, 16)
    assert config["patience"] is None and config["gain"] == "linear" and config["seed"] == 3
    assert summary["data"] == {k: str(v) for k, v in toy_files.items()}

    fold = tmp_path / "Fold1"
    fold.mkdir()
    for name, part in zip(("train", "vali", "test"), toy, strict=True):
        write_svmlight(part, fold / f"{name}.txt")
    result = invoke("train", *QUICK, "--data", fold, "--loss", "margin", "--out", tmp_path / "fold")
    assert result.exit_code == 0, result.output
    assert f"Test metrics on {fold / 'test.txt'}" in result.output
    assert json.loads((tmp_path / "fold" / "metrics.json").read_text())["data"]["valid"] == str(fold / "vali.txt")

    # A training file alone: validation is held out of it and the table reports on it.
    result = invoke("train", *QUICK, "--data", toy_files["train"], "--valid-fraction", "0.2", "--out", tmp_path / "v")
    assert result.exit_code == 0, result.output
    assert "Validation (no --test given) metrics on 0.2 of the training sessions" in result.output


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path: Path, monkeypatch) -> None:
    args = ["train", "--no-progress", "--epochs", "4", "--patience", "0", "--model", "mlp", "--hidden", "8",
            "--dropout", "0.2"]
    straight = runner.invoke(app, [*args, "--out", str(tmp_path / "straight")])
    assert straight.exit_code == 0, straight.output

    real_train = ltr_api.train

    def interrupted_train(*a, **kw):
        def stop(epoch: int, record: dict) -> None:
            if epoch == 2:
                raise KeyboardInterrupt

        return real_train(*a, **{**kw, "on_epoch_end": stop})

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ltr_api, "train", interrupted_train)
    crashed = runner.invoke(app, args)  # default out dir runs/<timestamp>
    assert crashed.exit_code == 130, crashed.output
    assert "interrupted" in crashed.output and "up to epoch 2" in crashed.output and "--resume" in crashed.output
    (run,) = (tmp_path / "runs").iterdir()
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 2
    monkeypatch.setattr(ltr_api, "train", real_train)

    resumed = runner.invoke(app, ["train", "--resume", "--no-progress"])  # no --out: the latest run
    assert resumed.exit_code == 0, resumed.output
    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    b = json.loads((run / "metrics.json").read_text())
    assert b["resumed_from_epoch"] == 2 and b["epochs_run"] == 4
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
    assert strip(b["history"]) == strip(a["history"]) and b["test"] == a["test"]
    last_a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)["model_state"]
    last_b = torch.load(run / "checkpoint.pt", weights_only=True)["model_state"]
    for key, value in last_a.items():
        assert torch.equal(last_b[key], value), key

    changed = runner.invoke(app, ["train", "--resume", "--lr", "0.5"])
    assert_one_line_error(changed, "--lr cannot be given with --resume")


def test_resume_without_any_run_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(invoke("train", *QUICK, "--resume"), "nothing to resume", "--out")


def test_bad_training_input_exits_with_one_line(tmp_path: Path, toy_files) -> None:
    good = "1 qid:1 0:0.5 1:0.1\n0 qid:1 0:0.2 1:0.3\n"
    cases = {
        "malformed.txt": (good + "2 qid:2 0:abc\n", ["malformed.txt, line 3", "not a number"]),
        "noqid.txt": ("1 qid:1 0:0.5\n0 0:0.2\n", ["noqid.txt, line 2", "missing 'qid:<integer>'"]),
        "empty.txt": ("", ["empty.txt", "no data rows"]),
        "badquery.txt": (None, ["badquery.txt.query", "sum to 3", "has 2 data rows"]),
    }
    for name, (text, fragments) in cases.items():
        path = tmp_path / name
        if text is None:
            path.write_text("1 0:0.5\n0 0:0.2\n")
            Path(f"{path}.query").write_text("1\n2\n")
        else:
            path.write_text(text)
        assert_one_line_error(invoke("train", *QUICK, "--data", path), *fragments)

    missing = tmp_path / "nope.txt"
    assert_one_line_error(invoke("train", *QUICK, "--data", missing), "no such file", "nope.txt")
    assert_one_line_error(invoke("train", *QUICK, "--data", toy_files["train"], "--test", missing), "nope.txt")

    wide = tmp_path / "wide.txt"
    wide.write_text("1 qid:1 0:0.5 40:1\n0 qid:1 0:0.2\n")
    assert_one_line_error(invoke("train", *QUICK, "--data", toy_files["train"], "--test", wide),
                          "--test", "wide.txt has 41 feature columns", "has 16")

    assert_one_line_error(invoke("train", *QUICK, "--lr", "0"), "--lr must be > 0")
    assert_one_line_error(invoke("train", *QUICK, "--eval-metric", "auc"), "--eval-metric", "unknown metric 'auc'")
    usage = invoke("train", *QUICK, "--hidden", "8,x")
    assert usage.exit_code == 2 and "--hidden" in usage.output
    assert invoke("train", "--loss", "listnet").exit_code == 2
    if not torch.cuda.is_available():
        assert_one_line_error(invoke("train", *QUICK, "--device", "cuda"), "CUDA is not available")


def test_bad_evaluate_and_predict_input(trained_run, tmp_path: Path, toy_files) -> None:
    out, _ = trained_run
    assert_one_line_error(invoke("evaluate", tmp_path / "missing.pt", "--data", toy_files["test"]),
                          "no such file", "missing.pt")
    not_a_model = tmp_path / "model.pt"
    not_a_model.write_text("hello")
    assert_one_line_error(invoke("evaluate", not_a_model, "--data", toy_files["test"]),
                          "MODEL", "model.pt is not a checkpoint written by pairloss")
    assert_one_line_error(invoke("evaluate", out, "--data", toy_files["test"], "--metric", "p@5"),
                          "unknown metric 'p@5'")
    wide = tmp_path / "wide.txt"
    wide.write_text("1 qid:1 0:0.5 99:1\n")
    assert_one_line_error(invoke("predict", out, "--data", wide), "--data", "wide.txt has 100 feature columns",
                          "the model takes 16")
    assert invoke("evaluate", out).exit_code == 2  # --data is required


def test_cli_defaults_are_the_library_defaults() -> None:
    params = inspect.signature(train_command).parameters
    defaults = TrainConfig()
    renamed = {"batch_size": "sessions_per_batch"}
    for name in ("model", "dropout", "optimizer", "lr", "momentum", "margin", "l1", "l2", "epochs", "batch_size",
                 "patience", "eval_metric", "gain", "standardize", "seed", "device"):
        assert params[name].default == getattr(defaults, renamed.get(name, name)), name
    assert params["hidden"].default == ",".join(map(str, defaults.hidden))
    assert params["loss"].default == "pairwise" and defaults.loss == "pairwise_logistic"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_train_on_cuda_matches_cpu(tmp_path: Path) -> None:
    # the whole toolkit on the device: Triton PairWiseLoss kernels under autograd, evaluation, checkpoint
    runs = {}
    for dev in ("cpu", "cuda"):
        out = tmp_path / dev
        result = invoke("train", *QUICK, "--device", dev, "--seed", "0", "--out", out)
        assert result.exit_code == 0, result.output
        runs[dev] = json.loads((out / "metrics.json").read_text())
    assert runs["cuda"]["history"][-1]["train_loss"] == pytest.approx(runs["cpu"]["history"][-1]["train_loss"],
                                                                     rel=1e-3)


def test_predict_and_onnxruntime_agree_on_the_same_one_based_letor_file(toy, tmp_path: Path) -> None:
    # Issue 9: the exported scorer took column j = feature index j while scikit-learn's default
    # (zero_based="auto") shifts a one-based file by one column: scores off by up to 4.7, no error. The
    # layout is now in the model's metadata and the README, and feeding it that way matches `predict`.
    import onnx
    import onnxruntime as ort
    train, _, test = toy
    paths = {}
    for name, part in (("train", train), ("test", test)):
        paths[name] = tmp_path / f"{name}.letor"
        dump_svmlight_file(part.features, part.labels, str(paths[name]), zero_based=False, query_id=part.qids)
    out = tmp_path / "run"
    assert invoke("train", *QUICK, "--data", paths["train"], "--valid-fraction", "0", "--out", out).exit_code == 0
    assert invoke("export", out, "--out", tmp_path / "m.onnx").exit_code == 0
    assert invoke("predict", out, "--data", paths["test"], "--out", tmp_path / "s.txt").exit_code == 0
    predicted = np.loadtxt(tmp_path / "s.txt")

    meta = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    width = int(meta["pairloss.n_features"])
    assert width == train.n_features + 1  # one-based: column 0 unused
    assert "column j = feature index j" in meta["pairloss.input_layout"]
    read_with = f"pairloss.ltr.load(path, n_features={width}).features"
    assert meta["pairloss.read_with"] == read_with
    features = load(paths["test"], n_features=width).features  # as the metadata says: absent features are NaN
    assert np.isnan(features).any()
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (onnx_scores,) = session.run(None, {"features": features})
    np.testing.assert_allclose(onnx_scores, predicted, rtol=1e-5, atol=1e-6)


def _letor_text(n_rows: int = 200, *, label=lambda i: i % 3, extra: str = "") -> str:
    return "".join(f"{label(i)} qid:{i // 10} 0:{(i * 7) % 11 / 10} 1:{(i * 3) % 7 / 5}{extra if i == 7 else ''}\n"
                   for i in range(n_rows))


@pytest.mark.parametrize(
    ("name", "make", "fragments"),
    [
        ("cut.txt.gz", lambda: __import__("gzip").compress(_letor_text(2000).encode())[:3000],
         ["--data", "cut.txt.gz", "truncated or damaged"]),
        ("huge.txt", lambda: _letor_text(20, extra=" 1000000000:1").encode(),
         ["--data", "huge.txt, line 8", "74.5 GiB", "limit of 4 GiB"]),
        ("nan.txt", lambda: _letor_text(label=lambda i: "nan" if i == 3 else i % 3).encode(),
         ["--data", "nan.txt, line 4", "label is NaN or infinite"]),
        ("big_labels.txt", lambda: _letor_text(label=lambda i: 1500 * (i % 2)).encode(),
         ["exp2 gain", "--gain linear"]),
    ],
    ids=["truncated-gz", "huge-index", "nan-label", "labels-over-1024"],
)
def test_hostile_data_files_are_one_line_errors(tmp_path: Path, name: str, make, fragments: list[str]) -> None:
    path = tmp_path / name
    path.write_bytes(make())
    result = invoke("train", *QUICK, "--data", path, "--out", tmp_path / "run")
    assert_one_line_error(result, *fragments)
    assert "Aborted" not in result.output


@pytest.mark.parametrize("content", [b"", b"\x00" * 64, b"PK\x03\x04truncated"], ids=["empty", "zeros", "cut-zip"])
def test_unreadable_checkpoints_are_one_line_errors_everywhere(trained_run, toy_files, tmp_path: Path,
                                                               content: bytes) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    for args in (["evaluate", bad, "--data", toy_files["test"]], ["predict", bad, "--data", toy_files["test"]],
                 ["export", bad, "--out", tmp_path / "m.onnx"]):
        result = invoke(*args)
        assert_one_line_error(result, "MODEL", "bad.pt")
        assert "Aborted" not in result.output
