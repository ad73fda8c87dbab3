"""The `rotld` Typer application: each sub-module registers one command group.

Command modules import their implementation inside the command function, so `rotld --help`
and the non-engine commands never import torch, mmcv, mmdet or mmrotate.
"""

from __future__ import annotations

import sys
import traceback
from typing import NoReturn

import typer

from rotld_cli import __version__, ui
from rotld_cli.errors import RotldError, describe_os_error
from rotld_cli.quiet import silence_third_party

app = typer.Typer(
    name="rotld",
    help="Rotated Localization Distillation for oriented object detection on DOTA.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        ui.console.print(f"rotld {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False, "--debug", help="Show full tracebacks and third-party warnings (anywhere on the line)."
    ),
) -> None:
    """`main` takes `--debug` out of the line wherever it is; this option documents it."""


from rotld_cli.cli import (  # noqa: E402  (commands register themselves on `app`)
    convert,
    demo,
    doctor,
    evaluate,
    export,
    predict,
    prepare,
    publish,
    recipes,
    train,
)

__all__ = ["app", "convert", "demo", "doctor", "evaluate", "export", "main", "predict", "prepare", "publish", "recipes",
           "train"]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: one-line errors and exit codes instead of tracebacks."""
    from rotld_cli.cli.help import polish, strip_debug

    args, debug = strip_debug(list(sys.argv[1:] if argv is None else argv))
    ui.set_debug(debug)
    if not ui.debug_enabled():
        silence_third_party()  # before any command imports the engine stack
    ui.install_log_handler()  # the engine and the toolkit report through `logging`
    command = typer.main.get_command(app)
    polish(command)
    try:
        # the training commands hand these to their worker processes (never this process's sys.argv)
        worker_args = ["--debug", *args] if debug else args
        rc = command.main(args=args, prog_name="rotld", standalone_mode=False, obj={"argv": worker_args})
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        ui.error("interrupted")
        sys.exit(130)
    except RotldError as exc:
        if ui.debug_enabled():
            traceback.print_exc()
        ui.error(str(exc))
        sys.exit(exc.exit_code)
    except OSError as exc:  # an output that is a file, a folder, under /proc, no permission, a full disk
        if ui.debug_enabled():
            traceback.print_exc()
        message = describe_os_error(exc)
        if message is None:
            _internal_error(exc)
        ui.error(message)
        sys.exit(1)
    except Exception as exc:  # last resort: never a raw traceback by default
        if _is_usage_error(exc):
            exc.show()
            sys.exit(exc.exit_code)
        if ui.debug_enabled():
            traceback.print_exc()
        _internal_error(exc)
    # Without standalone mode, click returns a `typer.Exit(n)` code instead of raising it.
    rc = rc if isinstance(rc, int) else 0
    if rc == 130:
        ui.error("interrupted")
    sys.exit(rc)


def _internal_error(exc: BaseException) -> NoReturn:
    ui.error(f"internal error: {type(exc).__name__}: {exc} (run `rotld --debug ...` for the traceback)")
    sys.exit(1)


def _is_usage_error(exc: Exception) -> bool:
    """Click's own option/argument errors (Typer vendors click in recent releases)."""
    return callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int)
