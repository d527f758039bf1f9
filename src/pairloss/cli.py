"""The ``pairloss`` command line: thin commands that each call one library function.

``python -m pairloss`` runs it too, and ``torchrun ... -m pairloss train`` trains data-parallel. Every
error it can hit is one line, ``error: <flag or file>: <cause>``, and exit code 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from pairloss.ltr.api import (
    KEEP,
    REPORT_METRICS,
    InputError,
    TrainingInterrupted,
    TrainReport,
    default_out_dir,
    evaluate_model,
    export_model,
    predict_file,
    resume_training,
    run_training,
)
from pairloss.ltr.config import FILLS, GAINS, LOSSES, MODEL_NAMES, OPTIMIZERS, RESUMABLE_FIELDS, TRANSFORMS, TrainConfig

if TYPE_CHECKING:
    from pairloss.ltr.cv import CVReport

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
# Learning to rank: train / evaluate / predict / export (each calls one function of pairloss.ltr.api)

_DEFAULTS = TrainConfig()
_LOSS_NAMES = {spec.short_name: name for name, spec in LOSSES.items()}
_LossName = Literal[*_LOSS_NAMES]  # type: ignore[valid-type]
_Optimizer = Literal[*OPTIMIZERS]  # type: ignore[valid-type]
_Gain = Literal[*GAINS]  # type: ignore[valid-type]
_Model = Literal[*MODEL_NAMES]  # type: ignore[valid-type]
_Transform = Literal[*TRANSFORMS]  # type: ignore[valid-type]
_Fill = Literal[*FILLS]  # type: ignore[valid-type]
# What an input of pairloss.ltr.api is called on the command line.
_INPUT_FLAGS = {"model": "MODEL", "valid_fraction": "--valid-fraction", "directory": "DIR", "folds": "--fold"}
# TrainConfig fields whose flag is not the field name with dashes.
_FIELD_FLAGS = {"sessions_per_batch": "--batch-size"}
# `train --resume` continues the stored run; of the flags that change it, only these may be given.
_RESUME_FLAGS = {"out", "resume", "progress", *RESUMABLE_FIELDS}
_USER_ERRORS = (ValueError, OSError, ImportError, FloatingPointError, RuntimeError, EOFError)


def _option(name: str) -> str:
    """The flag of a ``train`` parameter or TrainConfig field."""
    return _FIELD_FLAGS.get(name) or "--" + name.replace("_", "-")


def _one_line(exc: BaseException) -> str:
    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, InputError):
        return f"{_INPUT_FLAGS.get(exc.source) or _option(exc.source)}: {message}"
    field = message.split(" ", 1)[0].rstrip(":")
    if field in TrainConfig.__dataclass_fields__:  # "lr must be > 0": the field is the flag's name
        return _option(field) + message[len(field):]
    return message


@contextmanager
def _user_errors() -> Iterator[None]:
    """Library errors (bad file, bad option value, ...) become one line on stderr and exit code 1."""
    try:
        yield
    except (typer.Exit, typer.Abort):  # click's exits derive from RuntimeError: let them through
        raise
    except TrainingInterrupted as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(130) from None
    except _USER_ERRORS as exc:
        typer.echo(f"error: {_one_line(exc)}", err=True)
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


def _given(ctx: typer.Context) -> list[str]:
    """The parameters the user typed (not defaults)."""
    return [name for name in ctx.params if (src := ctx.get_parameter_source(name)) and src.name == "COMMANDLINE"]


def _print_training(report: TrainReport) -> None:
    result, config, console = report.result, report.config, _console()
    sources = report.splits.sources
    best = f"best epoch {result.best_epoch}/{result.epochs_run}"
    if result.best_metric is not None:
        best += f" ({config.eval_metric} {result.best_metric:.4f} on validation)"
    ranks = f" on {report.world_size} processes" if report.world_size > 1 else ""
    resumed = f", resumed from epoch {result.resumed_from_epoch}" if result.resumed_from_epoch is not None else ""
    console.print(f"Trained {config.model} / {config.loss}{ranks} on {sources['train']}: {best}{resumed}",
                  highlight=False)
    console.print(f"Run directory: {report.out_dir} (best.pt, checkpoint.pt, metrics.json, curves.png)",
                  highlight=False)
    if report.eval_split is None:
        console.print("No test or validation data: no metrics to report (pass --test).")
        return
    part = report.splits.test if report.eval_split == "test" else report.splits.valid
    assert part is not None
    what = "Test" if report.eval_split == "test" else "Validation (no --test given)"
    title = (f"{what} metrics on {sources[report.eval_split]}, {part.n_sessions} sessions "
             f"({config.gain} gain{', all-equal sessions excluded' if config.exclude_all_equal else ''})")
    _print_metrics(console, title, report.eval_metrics)


# The options of a training configuration, shared by `train` and `cv` (defaults: TrainConfig's).
_ModelOpt = Annotated[_Model, typer.Option("--model", help="Scorer.")]
_HiddenOpt = Annotated[str, typer.Option("--hidden", help="MLP hidden layer widths.")]
_DropoutOpt = Annotated[float, typer.Option("--dropout", min=0.0, max=0.99, help="MLP dropout.")]
_LossOpt = Annotated[_LossName, typer.Option("--loss", help="; ".join(
    f"{s.short_name}: {s.summary}" for s in LOSSES.values()))]
_OptimizerOpt = Annotated[_Optimizer, typer.Option("--optimizer")]
_LrOpt = Annotated[float, typer.Option("--lr", help="Learning rate (> 0).")]
_MomentumOpt = Annotated[float, typer.Option("--momentum", min=0.0, help="SGD momentum.")]
_MarginOpt = Annotated[float, typer.Option("--margin", help="Margin of the hinge and margin losses.")]
_SigmaOpt = Annotated[float, typer.Option("--sigma", help="Score scale of the lambdarank loss (> 0).")]
_TopnOpt = Annotated[int, typer.Option("--topn", min=0, help="lambdarank: weight only pairs with an item in the "
                                       "current top n (NDCG@n); 0: all pairs.")]
_L1Opt = Annotated[float, typer.Option("--l1", min=0.0, help="L1 penalty on weights.")]
_L2Opt = Annotated[float, typer.Option("--l2", min=0.0, help="L2 penalty on weights.")]
_EpochsOpt = Annotated[int, typer.Option("--epochs", min=1, help="Epochs (with --resume: the new total).")]
_BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Sessions per batch.")]
_PatienceOpt = Annotated[int, typer.Option("--patience", min=0,
                                           help="Stop after this many epochs without improvement; 0: never.")]
_EvalMetricOpt = Annotated[str, typer.Option("--eval-metric", help="Validation metric to maximise.")]
_GainOpt = Annotated[_Gain, typer.Option("--gain", help="NDCG gain: exp2 (2^label - 1) or linear (label); also "
                                         "lambdarank's.")]
_StandardizeOpt = Annotated[bool, typer.Option("--standardize/--no-standardize",
                                               help="Standardise features with training statistics.")]
_TransformOpt = Annotated[_Transform, typer.Option("--transform", help="Feature transform before standardising: "
                                                   "none, or log1p (signed log(1 + |x|), for heavy-tailed features).")]
_IndicatorsOpt = Annotated[bool, typer.Option(
    "--missing-indicators/--no-missing-indicators",
    help="Add a 0/1 input per feature saying it was missing (NULL, nan or absent in the file).")]
_FillOpt = Annotated[_Fill, typer.Option("--missing-fill", help="Missing values become the mean of the feature's "
                                         "present training values (mean), or 1 std beyond their max or min.")]
_NoiseOpt = Annotated[float, typer.Option("--input-noise", min=0.0,
                                          help="Std of Gaussian noise on the standardised training features.")]
_SeedOpt = Annotated[int, typer.Option("--seed", min=0)]
_DeviceOpt = Annotated[Literal["cpu", "cuda"], typer.Option("--device")]


_DEFAULT_HIDDEN = ",".join(map(str, _DEFAULTS.hidden))


def _train_config(params: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of a command's parameters (those that are config fields, under their flag names)."""
    fields = {name: value for name, value in params.items() if name in TrainConfig.__dataclass_fields__}
    fields.update(hidden=_parse_hidden(params["hidden"]), loss=_LOSS_NAMES[params["loss"]],
                  sessions_per_batch=params["batch_size"], patience=params["patience"] or None)
    return TrainConfig(**fields)


@app.command("train")
def train_command(
    ctx: typer.Context,
    data: Annotated[Path | None, typer.Option(
        "--data", help="Training data: SVMlight/LETOR file (qid: on each line), LightGBM file with "
        "<file>.query beside it, LETOR Fold directory, or a directory with <name>.train and <name>.test "
        "(LightGBM's examples). Default: built-in synthetic data.")] = None,
    valid: Annotated[Path | None, typer.Option("--valid", help="Validation data (early stopping).")] = None,
    test: Annotated[Path | None, typer.Option("--test", help="Test data for the final table.")] = None,
    valid_fraction: Annotated[float, typer.Option(
        "--valid-fraction", min=0.0, max=0.9,
        help="Without validation data, hold out this fraction of training sessions; 0 trains on all "
        "and keeps the last epoch.")] = 0.1,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Run directory. Default: runs/<timestamp> (with --resume: the latest run).")] = None,
    model: _ModelOpt = _DEFAULTS.model,
    hidden: _HiddenOpt = _DEFAULT_HIDDEN,
    dropout: _DropoutOpt = _DEFAULTS.dropout,
    loss: _LossOpt = LOSSES[_DEFAULTS.loss].short_name,
    optimizer: _OptimizerOpt = _DEFAULTS.optimizer,
    lr: _LrOpt = _DEFAULTS.lr,
    momentum: _MomentumOpt = _DEFAULTS.momentum,
    margin: _MarginOpt = _DEFAULTS.margin,
    sigma: _SigmaOpt = _DEFAULTS.sigma,
    topn: _TopnOpt = _DEFAULTS.topn,
    l1: _L1Opt = _DEFAULTS.l1,
    l2: _L2Opt = _DEFAULTS.l2,
    epochs: _EpochsOpt = _DEFAULTS.epochs,
    batch_size: _BatchOpt = _DEFAULTS.sessions_per_batch,
    patience: _PatienceOpt = _DEFAULTS.patience or 0,
    eval_metric: _EvalMetricOpt = _DEFAULTS.eval_metric,
    gain: _GainOpt = _DEFAULTS.gain,
    standardize: _StandardizeOpt = _DEFAULTS.standardize,
    transform: _TransformOpt = _DEFAULTS.transform,  # type: ignore[assignment]
    missing_indicators: _IndicatorsOpt = _DEFAULTS.missing_indicators,
    missing_fill: _FillOpt = _DEFAULTS.missing_fill,  # type: ignore[assignment]
    input_noise: _NoiseOpt = _DEFAULTS.input_noise,
    seed: _SeedOpt = _DEFAULTS.seed,
    device: _DeviceOpt = _DEFAULTS.device,  # type: ignore[assignment]
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the run in --out with its stored options and data; only --epochs and "
        "--patience may be given with it.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Train a ranking model with a pairwise loss and print test NDCG@1/3/5/10, MAP and MRR.

    With no options it trains on the built-in synthetic data in a few seconds. Under torchrun it trains
    data-parallel (gloo on CPU, NCCL on CUDA), rank 0 writing the run directory.

    $ pairloss train --data . --epochs 2 --out runs/dir   # a directory with rank.train and rank.test

    $ pairloss train --data rank.train --test rank.test --model mlp --epochs 2 --out runs/demo

    $ pairloss train --resume --out runs/demo --epochs 3

    $ torchrun --standalone --nproc-per-node 2 -m pairloss train --data rank.train --epochs 2 --out runs/ddp
    """
    config_hidden = _parse_hidden(hidden)
    with _user_errors():
        if resume:
            fixed = [name for name in _given(ctx) if name not in _RESUME_FLAGS]
            if fixed:
                raise ValueError(f"{_option(fixed[0])} cannot be given with --resume: the run continues with the "
                                 "options and data it was started with (only --epochs and --patience may change)")
            given = _given(ctx)
            report = resume_training(
                out, epochs=epochs if "epochs" in given else None,
                patience=(patience or None) if "patience" in given else KEEP, progress=progress,
            )
        else:
            config = _train_config({**ctx.params, "hidden": ",".join(map(str, config_hidden))})
            report = run_training(config, data, valid, test, out_dir=out, valid_fraction=valid_fraction,
                                  progress=progress)
    if report.is_main:
        _print_training(report)


def _print_cv(report: CVReport) -> None:
    console = _console()
    config = report.config
    console.print(f"{len(report.folds)}-fold cross-validation of {config.model} / {config.loss} on {report.data} "
                  f"({report.jobs} process{'es' if report.jobs > 1 else ''}); runs and cv.json in {report.out_dir}",
                  highlight=False)
    for split, heading in (("test", "Test"), ("valid", "Validation (vali split; compare settings by these)")):
        table = Table(title=f"{heading}: {config.gain} gain"
                      f"{', all-equal sessions excluded' if config.exclude_all_equal else ''}")
        table.add_column("fold")
        for metric in REPORT_METRICS:
            table.add_column(metric.upper(), justify="right")
        for fold in report.folds:
            table.add_row(fold.name, *(_format(getattr(fold, split).get(m, float("nan"))) for m in REPORT_METRICS))
        table.add_row("mean ± se", *(f"{_format(report.mean[split][m])} ± {_format(report.stderr[split][m])}"
                                     for m in REPORT_METRICS), style="bold")
        console.print(table)


def _format(value: float) -> str:
    return "n/a" if value != value else f"{value:.4f}"


class _FoldProgress:
    """A rich progress bar per fold, advanced by cross_validate's progress hook."""

    def __init__(self, names: list[str], epochs: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=Console(stderr=True))
        self.tasks = {name: self.bar.add_task(name, total=epochs, info="") for name in names}

    def __call__(self, name: str, epoch: int, epochs: int, value: float | None) -> None:
        info = "" if value is None else f"vali {value:.4f}"
        self.bar.update(self.tasks[name], completed=epoch, info=info)

    def __enter__(self) -> _FoldProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


@app.command("cv")
def cv_command(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(metavar="DIR", help="Directory with Fold1..FoldK (train/vali/test.txt "
                                         "each) or with partitions S1.txt..SK.txt (LETOR's rotation).")],
    out: Annotated[Path | None, typer.Option("--out", help="Directory of the fold runs and cv.json. Default: "
                                             "runs/cv-<timestamp>.")] = None,
    jobs: Annotated[int | None, typer.Option("--jobs", min=1, help="Folds trained at once, one process each. "
                                             "Default: min(folds, cores).")] = None,
    fold: Annotated[list[str] | None, typer.Option("--fold", help="Only this fold (repeatable), e.g. Fold1.")
                    ] = None,
    model: _ModelOpt = _DEFAULTS.model,
    hidden: _HiddenOpt = _DEFAULT_HIDDEN,
    dropout: _DropoutOpt = _DEFAULTS.dropout,
    loss: _LossOpt = LOSSES[_DEFAULTS.loss].short_name,
    optimizer: _OptimizerOpt = _DEFAULTS.optimizer,
    lr: _LrOpt = _DEFAULTS.lr,
    momentum: _MomentumOpt = _DEFAULTS.momentum,
    margin: _MarginOpt = _DEFAULTS.margin,
    sigma: _SigmaOpt = _DEFAULTS.sigma,
    topn: _TopnOpt = _DEFAULTS.topn,
    l1: _L1Opt = _DEFAULTS.l1,
    l2: _L2Opt = _DEFAULTS.l2,
    epochs: _EpochsOpt = _DEFAULTS.epochs,
    batch_size: _BatchOpt = _DEFAULTS.sessions_per_batch,
    patience: _PatienceOpt = _DEFAULTS.patience or 0,
    eval_metric: _EvalMetricOpt = _DEFAULTS.eval_metric,
    gain: _GainOpt = _DEFAULTS.gain,
    standardize: _StandardizeOpt = _DEFAULTS.standardize,
    transform: _TransformOpt = _DEFAULTS.transform,  # type: ignore[assignment]
    missing_indicators: _IndicatorsOpt = _DEFAULTS.missing_indicators,
    missing_fill: _FillOpt = _DEFAULTS.missing_fill,  # type: ignore[assignment]
    input_noise: _NoiseOpt = _DEFAULTS.input_noise,
    seed: _SeedOpt = _DEFAULTS.seed,
    device: _DeviceOpt = _DEFAULTS.device,  # type: ignore[assignment]
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar per fold.")] = True,
) -> None:
    """Cross-validate a training configuration over LETOR folds; print per-fold and mean ± se metrics.

    Every fold trains with early stopping on its vali split and is scored on its test split (NDCG@1/3/5/10,
    MAP, MRR); folds run in parallel processes. Writes OUT/Fold<i>/ (each a run directory) and OUT/cv.json.

    $ pairloss cv letor --epochs 2 --out runs/cv   # letor/S1.txt .. letor/S5.txt

    $ pairloss cv letor --fold Fold1 --jobs 1 --loss lambdarank --epochs 1 --out runs/cv1
    """
    from pairloss.ltr.cv import cross_validate, fold_names

    with _user_errors():
        config = _train_config(ctx.params)
        names = fold_names(data, fold)
        out_dir = out if out is not None else default_out_dir(Path("runs") / "cv")
        with _FoldProgress(names, config.epochs) if progress else nullcontext() as bar:
            report = cross_validate(config, data, out_dir, jobs=jobs, folds=fold, progress=bar)
    _print_cv(report)


@app.command("evaluate")
def evaluate_command(
    model: Annotated[Path, typer.Argument(help="A run directory (its best.pt, else checkpoint.pt), or a .pt file.")],
    data: Annotated[Path, typer.Option("--data", help="Data file (SVMlight/LETOR, or LightGBM with .query).")],
    metric: Annotated[list[str] | None, typer.Option(
        "--metric", help="Metric (repeatable): ndcg, ndcg@k, map, map@k, mrr, mrr@k, pairwise_accuracy. "
        "Default: ndcg@1/3/5/10, map, mrr.")] = None,
    gain: Annotated[_Gain, typer.Option("--gain", help="NDCG gain.")] = _DEFAULTS.gain,
    exclude_all_equal: Annotated[bool, typer.Option(
        "--exclude-all-equal/--include-all-equal", help="Leave out sessions whose labels are all equal.")] = True,
    no_relevant: Annotated[Literal["skip", "zero", "one"], typer.Option(
        "--no-relevant", help="Sessions without a relevant item: skip, or score 0 or 1.")] = "skip",
    ties: Annotated[Literal["pessimistic", "optimistic", "stable"], typer.Option(
        "--ties", help="How equal scores are ordered.")] = "pessimistic",
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the metrics as JSON here.")] = None,
) -> None:
    """Compute ranking metrics of a trained model on a data file.

    $ pairloss evaluate runs/demo --data rank.test --metric ndcg@10 --metric map --json eval.json
    """
    with _user_errors():
        report = evaluate_model(
            model, data, metric or REPORT_METRICS, gain=gain, exclude_all_equal=exclude_all_equal,
            no_relevant=no_relevant, ties=ties, json_path=json_out,
        )
    title = f"{data}: {report.n_sessions} sessions, {report.n_items} items ({gain} gain)"
    _print_metrics(_console(), title, report.metrics)


@app.command("predict")
def predict_command(
    model: Annotated[Path, typer.Argument(help="A run directory (its best.pt, else checkpoint.pt), or a .pt file.")],
    data: Annotated[Path, typer.Option("--data", help="Data file (SVMlight/LETOR, or LightGBM with .query).")],
    out: Annotated[Path | None, typer.Option("--out", help="Score file (one per line). Default: stdout.")] = None,
) -> None:
    """Write one score per item of a data file (in file order) with a trained model.

    $ pairloss predict runs/demo --data rank.test --out scores.txt
    """
    with _user_errors():
        scores = predict_file(model, data, out)
    if out is None:
        typer.echo("\n".join(f"{s:.9g}" for s in scores.tolist()))
    else:
        typer.echo(f"wrote {scores.shape[0]} scores to {out}", err=True)


@app.command("export")
def export_command(
    model: Annotated[Path, typer.Argument(help="A run directory (its best.pt, else checkpoint.pt), or a .pt file.")],
    out: Annotated[Path, typer.Option("--out", help="ONNX file to write.")] = Path("model.onnx"),
    opset: Annotated[int | None, typer.Option("--opset", min=18, help="ONNX opset (default: the exporter's).")] = None,
    verify: Annotated[bool, typer.Option(
        "--verify/--no-verify", help="Score a random batch with ONNX Runtime and PyTorch; they must agree.")] = True,
) -> None:
    """Export a trained scorer to ONNX: input features (N, F) float32, output scores (N,), for any N.

    Column j of the input is feature index j of the data file, as pairloss reads it (the model's metadata
    says so; see the README).

    $ pairloss export runs/demo --out scorer.onnx
    """
    with _user_errors():
        scorer = export_model(model, out, opset=opset, verify=verify)
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


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``pairloss`` script; ``argv`` defaults to ``sys.argv[1:]``."""
    app(args=argv, prog_name="pairloss")


if __name__ == "__main__":
    main()
