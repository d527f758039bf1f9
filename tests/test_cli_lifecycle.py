"""The life of a run through the command line (issue 10): resume, interrupt, evaluate an interrupted run,
errors that name what the user typed, and every ``--help`` example run as written."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sklearn.datasets import dump_svmlight_file
from typer.testing import CliRunner

import pairloss._bench
import pairloss.ltr.trainer as trainer_module
from pairloss.cli import app
from pairloss.ltr import RankingDataset, make_toy_dataset

runner = CliRunner()
SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def write_lightgbm(data: RankingDataset, path: Path) -> Path:
    # an explicit last feature keeps the file's width equal to the data's even where it is 0
    features = data.features.copy()
    features[:, -1] = 1.0
    dump_svmlight_file(features, data.labels, str(path), zero_based=True)
    Path(f"{path}.query").write_text("".join(f"{n}\n" for n in data.lengths.tolist()))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    train, valid, test = make_toy_dataset(n_queries=80, docs_per_query=8, n_features=6, seed=3)
    return {"train": write_lightgbm(train, root / "rank.train"), "test": write_lightgbm(test, root / "rank.test"),
            "valid": write_lightgbm(valid, root / "rank.valid")}


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture
def interrupt_at(monkeypatch):
    """``interrupt_at(n)``: Ctrl-C lands while epoch ``n`` trains (before it finishes)."""
    real = trainer_module.run_epoch

    def install(n: int) -> None:
        def run_epoch(state, callbacks):
            if state.epoch == n:
                raise KeyboardInterrupt
            return real(state, callbacks)

        monkeypatch.setattr(trainer_module, "run_epoch", run_epoch)

    yield install
    monkeypatch.setattr(trainer_module, "run_epoch", real)


# --------------------------------------------------------------------------------------------------
# Must show: train 2 epochs, resume to 3, metrics.json says it resumed from epoch 2


def test_resume_continues_the_lightgbm_run_from_epoch_2(tmp_path: Path) -> None:
    data = SHARED_DATA / "lightgbm_rank" / "rank.train"
    if not data.is_file() or not Path(f"{data}.query").is_file():
        pytest.skip(f"sample data not available: {data}")
    out = tmp_path / "D"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1] / "src"),
                                                                    os.environ.get("PYTHONPATH")]))}
    first = subprocess.run([sys.executable, "-m", "pairloss", "train", "--data", str(data), "--model", "mlp",
                            "--epochs", "2", "--out", str(out), "--no-progress"],
                           capture_output=True, text=True, timeout=300, env=env)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert metrics_of(out)["epochs_run"] == 2
    second = invoke("train", "--resume", "--out", out, "--epochs", "3", "--no-progress")
    assert second.exit_code == 0, second.output
    assert "resumed from epoch 2" in second.output
    summary = metrics_of(out)
    assert summary["resumed_from_epoch"] == 2 and summary["epochs_run"] == 3
    assert [r["epoch"] for r in summary["history"]] == [1, 2, 3]
    assert summary["config"]["model"] == "mlp" and summary["config"]["epochs"] == 3
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 3


# --------------------------------------------------------------------------------------------------
# --resume continues with the stored configuration and data; only --epochs and --patience may change


def test_resume_uses_the_stored_options_and_data_paths(files, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "run"
    first = invoke("train", "--data", files["train"], "--test", files["test"], "--model", "mlp", "--hidden", "8",
                   "--lr", "0.02", "--gain", "linear", "--batch-size", "8", "--patience", "0", "--epochs", "2",
                   "--out", out, "--no-progress")
    assert first.exit_code == 0, first.output
    monkeypatch.chdir(tmp_path)  # another working directory: the stored paths are absolute
    resumed = invoke("train", "--resume", "--out", "run", "--epochs", "3", "--patience", "2", "--no-progress")
    assert resumed.exit_code == 0, resumed.output
    summary = metrics_of(out)
    config = summary["config"]
    assert (config["model"], config["hidden"], config["lr"], config["gain"]) == ("mlp", [8], 0.02, "linear")
    assert (config["sessions_per_batch"], config["epochs"], config["patience"]) == (8, 3, 2)
    assert summary["data"]["train"] == str(files["train"]) and summary["data"]["test"] == str(files["test"])
    assert summary["resumed_from_epoch"] == 2 and list(summary["test"]) and "Test metrics" in resumed.output


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--lr", "0.5"), ("--model", "mlp"), ("--data", "other.txt"), ("--test", "t.txt"), ("--seed", "1"),
     ("--valid-fraction", "0.2"), ("--loss", "hinge"), ("--no-standardize", None), ("--batch-size", "4")],
)
def test_resume_rejects_every_other_flag_naming_it(files, tmp_path: Path, flag: str, value: str | None) -> None:
    out = tmp_path / "run"
    assert invoke("train", "--data", files["train"], "--epochs", "1", "--out", out, "--no-progress").exit_code == 0
    before = (out / "checkpoint.pt").read_bytes()
    result = invoke("train", "--resume", "--out", out, flag, *([value] if value else []), "--no-progress")
    assert_one_line_error(result, f"{flag.replace('--no-', '--')} cannot be given with --resume",
                          "only --epochs and --patience")
    assert (out / "checkpoint.pt").read_bytes() == before


def test_resume_without_a_checkpoint_is_an_error_naming_the_directory(tmp_path: Path) -> None:
    typo = tmp_path / "rnus" / "demo"
    assert_one_line_error(invoke("train", "--resume", "--out", typo, "--no-progress"),
                          "--out", str(typo), "holds no checkpoint.pt")
    assert not typo.exists()  # nothing was trained from scratch
    (tmp_path / "empty").mkdir()
    assert_one_line_error(invoke("train", "--resume", "--out", tmp_path / "empty"), "--out", "no checkpoint.pt")


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip", b"\x80\x04K\x01."],
                         ids=["empty", "damaged", "foreign"])
def test_resume_from_an_unreadable_checkpoint_is_one_line(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "checkpoint.pt").write_bytes(content)
    result = invoke("train", "--resume", "--out", tmp_path, "--no-progress")
    assert_one_line_error(result, "--out", str(tmp_path / "checkpoint.pt"))


# --------------------------------------------------------------------------------------------------
# Interrupts name the run directory and the last finished epoch; the interrupted run stays usable


def test_interrupt_names_the_run_and_its_last_epoch_and_the_run_stays_usable(files, tmp_path: Path,
                                                                             interrupt_at) -> None:
    out = tmp_path / "run"
    interrupt_at(3)
    result = invoke("train", "--data", files["train"], "--valid-fraction", "0", "--epochs", "5", "--out", out,
                    "--no-progress")
    assert result.exit_code == 130, result.output
    assert f"interrupted: {out} holds the run up to epoch 2" in result.output
    assert f"pairloss train --resume --out {out}" in result.output and "Traceback" not in result.output
    assert {p.name for p in out.iterdir()} == {"checkpoint.pt", "metrics.json"}  # no best.pt without validation

    # evaluate / predict / export take the interrupted run directory (its checkpoint.pt)
    evaluated = invoke("evaluate", out, "--data", files["test"], "--metric", "ndcg@10", "--json", tmp_path / "e.json")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads((tmp_path / "e.json").read_text())["model"] == str(out / "checkpoint.pt")
    predicted = invoke("predict", out, "--data", files["test"], "--out", tmp_path / "s.txt")
    assert predicted.exit_code == 0, predicted.output
    exported = invoke("export", out, "--out", tmp_path / "m.onnx")
    assert exported.exit_code == 0, exported.output

    interrupt_at(-1)
    resumed = invoke("train", "--resume", "--out", out, "--no-progress")
    assert resumed.exit_code == 0, resumed.output
    assert metrics_of(out)["resumed_from_epoch"] == 2 and metrics_of(out)["epochs_run"] == 5


def test_interrupt_before_the_first_epoch_says_none_finished(files, tmp_path: Path, interrupt_at) -> None:
    out = tmp_path / "run"
    interrupt_at(1)
    result = invoke("train", "--data", files["train"], "--epochs", "3", "--out", out, "--no-progress")
    assert result.exit_code == 130, result.output
    assert f"interrupted before the first epoch finished: {out} holds no checkpoint" in result.output
    assert "holds the run up to" not in result.output
    assert_one_line_error(invoke("evaluate", out, "--data", files["test"]), "MODEL",
                          "holds no best.pt or checkpoint.pt")
    assert_one_line_error(invoke("train", "--resume", "--out", out), "--out", "holds no checkpoint.pt")


# --------------------------------------------------------------------------------------------------
# Every error names the flag or the file the user typed


def test_errors_name_the_flag_and_file(files, tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    assert_one_line_error(invoke("train", "--data", missing), "--data", "no such file", str(missing))
    assert_one_line_error(invoke("train", "--data", files["train"], "--valid", missing), "--valid", str(missing))
    assert_one_line_error(invoke("evaluate", tmp_path / "m.pt", "--data", files["test"]), "MODEL", "m.pt")
    assert_one_line_error(invoke("predict", tmp_path, "--data", files["test"]), "MODEL", str(tmp_path))
    assert_one_line_error(invoke("train", "--eval-metric", "p@5", "--no-progress"), "--eval-metric", "'p@5'")
    unsorted = tmp_path / "unsorted.txt"
    unsorted.write_text("1 qid:1 0:1\n0 qid:2 0:1\n1 qid:1 0:2\n")
    assert_one_line_error(invoke("train", "--data", unsorted), "--data", "unsorted.txt", "lines 1 and 3",
                          "sort the file by qid")
    result = invoke("train", "--data", unsorted)
    assert "noncontiguous_qids" not in result.output and "load_" not in result.output


# --------------------------------------------------------------------------------------------------
# Every --help example is a real command


def _examples() -> list[tuple[str, str]]:
    found = []
    for command in app.registered_commands:
        for line in (command.callback.__doc__ or "").splitlines():
            if line.strip().startswith("$ "):
                found.append((command.name or command.callback.__name__, line.strip()[2:]))
    return found


def test_help_shows_the_examples() -> None:
    examples = _examples()
    assert {name for name, _ in examples} >= {"train", "evaluate", "predict", "export", "ops", "bench"}
    for name, example in examples:
        result = invoke(name, "--help")
        assert result.exit_code == 0 and " ".join(example.split()[:3]) in " ".join(result.output.split())


def test_every_help_example_runs_as_written(files, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("train", "test"):  # the examples' rank.train / rank.test
        Path(f"rank.{name}").write_bytes(files[name].read_bytes())
        Path(f"rank.{name}.query").write_bytes(Path(f"{files[name]}.query").read_bytes())
    Path("letor").mkdir()  # the cv examples' partitions
    for i in range(1, 6):
        Path(f"letor/S{i}.txt").write_text("".join(f"{(q + j) % 3} qid:{i * 10 + q} 1:{j} 2:{'NULL' if j % 3 else q}\n"
                                                  for q in range(4) for j in range(5)))
    for name, example in _examples():
        argv = shlex.split(example, comments=True)
        if argv[0] == "torchrun":
            env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
            env["OMP_NUM_THREADS"] = "1"
            done = subprocess.run([sys.executable, "-m", "torch.distributed.run", *argv[1:], "--no-progress"],
                                  capture_output=True, text=True, timeout=300, env=env)
            assert done.returncode == 0, (example, done.stdout[-2000:], done.stderr[-2000:])
            continue
        assert argv[0] == "pairloss", example
        if name == "bench":  # the real run takes a minute on 2 busy cores: check the command, not the timings
            calls: list[dict] = []
            monkeypatch.setattr(pairloss._bench, "run_benchmarks", lambda **kw: calls.append(kw) or [])
        result = runner.invoke(app, argv[1:] + (["--no-progress"] if name in ("train", "cv") else []))
        assert result.exit_code == 0, (example, result.output)
    assert calls and calls[0]["quick"] is True
    assert Path("runs/demo/best.pt").is_file() and Path("runs/ddp/metrics.json").is_file()
    assert Path("runs/dir/best.pt").is_file() and Path("runs/cv/cv.json").is_file()
    assert Path("scores.txt").is_file() and Path("scorer.onnx").is_file() and Path("eval.json").is_file()


def test_resume_when_the_stored_data_is_gone_names_the_run(files, tmp_path: Path) -> None:
    data = tmp_path / "moved.train"
    data.write_bytes(files["train"].read_bytes())
    Path(f"{data}.query").write_bytes(Path(f"{files['train']}.query").read_bytes())
    out = tmp_path / "run"
    assert invoke("train", "--data", data, "--epochs", "1", "--out", out, "--no-progress").exit_code == 0
    data.unlink()
    assert_one_line_error(invoke("train", "--resume", "--out", out, "--epochs", "2"), "--out",
                          str(out / "checkpoint.pt"), "is a run whose training data cannot be read now", str(data))
