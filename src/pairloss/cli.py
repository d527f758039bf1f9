"""The ``pairloss`` command line: thin commands that each call one library function.

Heavy imports (torch) happen inside the command bodies, so ``pairloss --help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated

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


def main() -> None:
    """Entry point of the ``pairloss`` script."""
    app()


if __name__ == "__main__":
    main()
