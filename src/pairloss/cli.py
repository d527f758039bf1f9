"""The ``pairloss`` command line: thin commands that each call one library function.

Heavy imports (torch) happen inside the command bodies, so ``pairloss --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["app", "main"]

app = typer.Typer(
    name="pairloss",
    help="Pairwise ranking operators and a learning-to-rank toolkit.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from pairloss import __version__

        typer.echo(f"pairloss {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Pairwise ranking operators and a learning-to-rank toolkit."""


def _console() -> Console:
    # rich assumes 80 columns when output is piped; tables of schemas need more to stay readable
    console = Console()
    return console if console.is_terminal else Console(width=160)


@app.command("ops")
def ops_command(
    name: Annotated[str | None, typer.Argument(help="Operator to describe in full.")] = None,
) -> None:
    """List every operator with its devices, gradient op, in-place rule and ONNX mapping.

    $ pairloss ops PairWiseLoss   # the full schema doc of one operator
    """
    from pairloss import registry

    console = _console()
    if name is not None:
        try:
            console.print(registry.schema(name).describe(), markup=False, highlight=False, soft_wrap=True)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="NAME") from None
        return
    table = Table(title="pairloss operators")
    for column in ("operator", "inputs", "outputs", "args", "devices", "gradient op", "in-place", "ONNX"):
        # operator names stay whole (users copy them); the other columns fold on narrow terminals
        table.add_column(column, overflow="fold", no_wrap=column in ("operator", "gradient op"))
    for s in registry.all_schemas():
        grad = "(gradient op)" if s.is_gradient_op else ", ".join(registry.gradient_op_names(s.name)) or "-"
        table.add_row(
            s.name,
            ", ".join(i.name + ("?" if i.optional else "") for i in s.inputs),
            ", ".join(o.name for o in s.outputs),
            ", ".join(f"{a.name}={a.default!r}" for a in s.args) or "-",
            ", ".join(registry.devices(s.name)),
            grad,
            ", ".join(f"{i}->{o}" for i, o in sorted(s.inplace)) or "no",
            registry.onnx_mapping(s.name),
        )
    console.print(table)


# --------------------------------------------------------------------------------------------------
# Learning to rank: train / evaluate / predict (logic in pairloss.ltr.api; torch imported lazily)

_LossName = Literal["pairwise", "hinge", "margin"]
_USER_ERRORS = (ValueError, OSError, ImportError, FloatingPointError, RuntimeError)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Library errors (bad file, bad option value, ...) become one line on stderr and exit code 1."""
    try:
        yield
    except (typer.Exit, typer.Abort):  # click's exits derive from RuntimeError: let them through
        raise
    except _USER_ERRORS as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1) from None


def _parse_hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.replace(" ", "").split(",") if w)
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise typer.BadParameter(f"expected comma-separated positive layer widths such as 64,32; got {text!r}",
                                 param_hint="--hidden")
    return widths


def _print_metrics(console: Console, heading: str, values: dict[str, float]) -> None:
    console.print(heading, highlight=False)
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in values.items():
        label = "pairwise accuracy" if name == "pairwise_accuracy" else name.upper()
        table.add_row(label, "n/a" if value != value else f"{value:.4f}")  # NaN: no session qualified
    console.print(table)


@app.command("train")
def train_command(
    data: Annotated[Path | None, typer.Option(
        "--data", help="Training data: SVMlight/LETOR file (qid: on each line), LightGBM file with "
        "<file>.query beside it, or LETOR Fold directory. Default: built-in synthetic data.")] = None,
    valid: Annotated[Path | None, typer.Option("--valid", help="Validation data (early stopping).")] = None,
    test: Annotated[Path | None, typer.Option("--test", help="Test data for the final table.")] = None,
    valid_fraction: Annotated[float, typer.Option(
        "--valid-fraction", min=0.0, max=0.9,
        help="Without validation data, hold out this fraction of training sessions; 0 trains on all "
        "and keeps the last epoch.")] = 0.1,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Run directory. Default: runs/<timestamp> (with --resume: the latest run).")] = None,
    model: Annotated[Literal["linear", "mlp"], typer.Option("--model", help="Scorer.")] = "linear",
    hidden: Annotated[str, typer.Option("--hidden", help="MLP hidden layer widths.")] = "64,32",
    dropout: Annotated[float, typer.Option("--dropout", min=0.0, max=0.99, help="MLP dropout.")] = 0.0,
    loss: Annotated[_LossName, typer.Option(
        "--loss", help="pairwise (logistic/RankNet), hinge, or margin (sampled-pair margin ranking).")] = "pairwise",
    optimizer: Annotated[Literal["adam", "sgd"], typer.Option("--optimizer")] = "adam",
    lr: Annotated[float, typer.Option("--lr", help="Learning rate (> 0).")] = 0.01,
    momentum: Annotated[float, typer.Option("--momentum", min=0.0, help="SGD momentum.")] = 0.0,
    margin: Annotated[float, typer.Option("--margin", help="Margin of the hinge and margin losses.")] = 1.0,
    l1: Annotated[float, typer.Option("--l1", min=0.0, help="L1 penalty on weights.")] = 0.0,
    l2: Annotated[float, typer.Option("--l2", min=0.0, help="L2 penalty on weights.")] = 0.0,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 20,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Sessions per batch.")] = 32,
    patience: Annotated[int, typer.Option(
        "--patience", min=0, help="Stop after this many epochs without improvement; 0: never.")] = 5,
    eval_metric: Annotated[str, typer.Option("--eval-metric", help="Validation metric to maximise.")] = "ndcg@10",
    gain: Annotated[Literal["exp2", "linear"], typer.Option(
        "--gain", help="NDCG gain: exp2 (2^label - 1) or linear (label).")] = "exp2",
    standardize: Annotated[bool, typer.Option(
        "--standardize/--no-standardize", help="Standardise features with training statistics.")] = True,
    seed: Annotated[int, typer.Option("--seed", min=0)] = 0,
    device: Annotated[Literal["cpu", "cuda"], typer.Option("--device")] = "cpu",
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    distributed: Annotated[bool, typer.Option(
        "--distributed", help="Data-parallel over the processes of torchrun (gloo on CPU, NCCL on CUDA).")] = False,
) -> None:
    """Train a ranking model with a pairwise loss and print test NDCG@1/3/5/10, MAP and MRR.

    With no options it trains on the built-in synthetic data in a few seconds.

    $ pairloss train --data rank.train --test rank.test --model mlp --lr 0.001 --epochs 10

    $ torchrun --nproc-per-node 2 -m pairloss.ltr.distributed --epochs 3
    """
    config_hidden = _parse_hidden(hidden)
    with _user_errors():
        from pairloss.ltr.api import LOSS_ALIASES, run_training
        from pairloss.ltr.train import TrainConfig

        config = TrainConfig(
            loss=LOSS_ALIASES[loss], model=model, hidden=config_hidden, dropout=dropout, optimizer=optimizer,
            lr=lr, momentum=momentum, margin=margin, l1=l1, l2=l2, epochs=epochs, sessions_per_batch=batch_size,
            patience=patience or None, eval_metric=eval_metric, gain=gain, standardize=standardize, seed=seed,
            device=device,
        )
        try:
            report = run_training(
                config, data, valid, test, out_dir=out, valid_fraction=valid_fraction, resume=resume,
                progress=progress, distributed=distributed,
            )
        except KeyboardInterrupt:
            typer.echo("interrupted: the last finished epoch is in the run directory's checkpoint.pt; "
                       "continue with the same options plus --resume (and --out RUN_DIR)", err=True)
            raise typer.Exit(130) from None
    if not report.is_main:
        return
    result, console = report.result, _console()
    sources = report.splits.sources
    best = f"best epoch {result.best_epoch}/{result.epochs_run}"
    if result.best_metric is not None:
        best += f" ({config.eval_metric} {result.best_metric:.4f} on validation)"
    ranks = f" on {report.world_size} processes" if report.world_size > 1 else ""
    console.print(f"Trained {config.model} / {config.loss}{ranks} on {sources['train']}: {best}", highlight=False)
    console.print(f"Run directory: {report.out_dir} (best.pt, checkpoint.pt, metrics.json, curves.png)",
                  highlight=False)
    if report.eval_split is None:
        console.print("No test or validation data: no metrics to report (pass --test).")
        return
    part = report.splits.test if report.eval_split == "test" else report.splits.valid
    what = "Test" if report.eval_split == "test" else "Validation (no --test given)"
    title = (f"{what} metrics on {sources[report.eval_split]}, {part.n_sessions} sessions "
             f"({config.gain} gain{', all-equal sessions excluded' if config.exclude_all_equal else ''})")
    _print_metrics(console, title, report.eval_metrics)


@app.command("evaluate")
def evaluate_command(
    model: Annotated[Path, typer.Argument(help="best.pt / checkpoint.pt, or a run directory (its best.pt).")],
    data: Annotated[Path, typer.Option("--data", help="Data file (SVMlight/LETOR, or LightGBM with .query).")],
    metric: Annotated[list[str] | None, typer.Option(
        "--metric", help="Metric (repeatable): ndcg, ndcg@k, map, map@k, mrr, mrr@k, pairwise_accuracy. "
        "Default: ndcg@1/3/5/10, map, mrr.")] = None,
    gain: Annotated[Literal["exp2", "linear"], typer.Option("--gain", help="NDCG gain.")] = "exp2",
    exclude_all_equal: Annotated[bool, typer.Option(
        "--exclude-all-equal/--include-all-equal", help="Leave out sessions whose labels are all equal.")] = True,
    no_relevant: Annotated[Literal["skip", "zero", "one"], typer.Option(
        "--no-relevant", help="Sessions without a relevant item: skip, or score 0 or 1.")] = "skip",
    ties: Annotated[Literal["pessimistic", "optimistic", "stable"], typer.Option(
        "--ties", help="How equal scores are ordered.")] = "pessimistic",
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the metrics as JSON here.")] = None,
) -> None:
    """Compute ranking metrics of a trained model on a data file.

    $ pairloss evaluate runs/latest/best.pt --data rank.test --metric ndcg@10 --metric map --json eval.json
    """
    with _user_errors():
        from pairloss.ltr.api import REPORT_METRICS, evaluate_model

        report = evaluate_model(
            model, data, metric or REPORT_METRICS, gain=gain, exclude_all_equal=exclude_all_equal,
            no_relevant=no_relevant, ties=ties, json_path=json_out,
        )
    title = f"{data}: {report.n_sessions} sessions, {report.n_items} items ({gain} gain)"
    _print_metrics(_console(), title, report.metrics)


@app.command("predict")
def predict_command(
    model: Annotated[Path, typer.Argument(help="best.pt / checkpoint.pt, or a run directory (its best.pt).")],
    data: Annotated[Path, typer.Option("--data", help="Data file (SVMlight/LETOR, or LightGBM with .query).")],
    out: Annotated[Path | None, typer.Option("--out", help="Score file (one per line). Default: stdout.")] = None,
) -> None:
    """Write one score per item of a data file (in file order) with a trained model.

    $ pairloss predict runs/latest/best.pt --data rank.test --out scores.txt
    """
    with _user_errors():
        from pairloss.ltr.api import predict_file

        scores = predict_file(model, data, out)
    if out is None:
        typer.echo("\n".join(f"{s:.9g}" for s in scores.tolist()))
    else:
        typer.echo(f"wrote {scores.shape[0]} scores to {out}", err=True)


@app.command("export")
def export_command(
    model: Annotated[Path, typer.Argument(help="best.pt / checkpoint.pt, or a run directory (its best.pt).")],
    out: Annotated[Path, typer.Option("--out", help="ONNX file to write.")] = Path("model.onnx"),
    opset: Annotated[int | None, typer.Option("--opset", min=18, help="ONNX opset (default: the exporter's).")] = None,
    verify: Annotated[bool, typer.Option(
        "--verify/--no-verify", help="Score a random batch with ONNX Runtime and PyTorch; they must agree.")] = True,
) -> None:
    """Export a trained scorer to ONNX: input features (N, F) float32, output scores (N,), for any N.

    $ pairloss export runs/latest/best.pt --out model.onnx
    """
    with _user_errors():
        from pairloss.ltr.api import resolve_model_path
        from pairloss.ltr.train import load_model
        from pairloss.onnx import export_scorer

        scorer = load_model(resolve_model_path(model))
        export_scorer(scorer, out, opset_version=opset, verify=verify)
    checked = ", matches PyTorch in ONNX Runtime" if verify else ""
    typer.echo(f"wrote {out}: features (N, {scorer.n_features}) float32 -> scores (N,){checked}")


@app.command("bench")
def bench_command(
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes: runs in seconds.")] = False,
    threads: Annotated[int, typer.Option(help="Numba and torch threads.")] = 2,
    repeats: Annotated[int | None, typer.Option(help="Timed repeats per case (the median is kept).")] = None,
) -> None:
    """Time the CPU kernels against torch and NumPy in the same run; print speedups (as in BENCHMARKS.md).

    $ pairloss bench --quick
    """
    from pairloss._bench import machine_summary, run_benchmarks

    console = _console()
    with console.status("benchmarking...") as status:
        rows = run_benchmarks(quick=quick, threads=threads, repeats=repeats,
                              progress=lambda msg: status.update(f"benchmarking {msg}..."))
    table = Table(title="pairloss CPU kernels (speedup = baseline time / ours, same workload)",
                  caption=machine_summary(threads))
    for column in ("op", "case", "ours", "baseline", "speedup", "notes"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r.section, r.case, f"{r.ours_s * 1e3:,.1f} ms",
                      r.baseline + ("" if r.baseline_s is None else f" ({r.baseline_s * 1e3:,.1f} ms)"),
                      "-" if r.speedup is None else f"{r.speedup:,.1f}x",
                      "; ".join(f"{k}: {v}" for k, v in r.notes.items()))
    console.print(table)


def main() -> None:
    """Entry point of the ``pairloss`` script."""
    app()


if __name__ == "__main__":
    main()
