"""The ``chsnet`` command: ``segment``, ``evaluate``, ``info`` (and ``train``/``finetune`` when installed).

``main(argv)`` returns the exit code so tests call it in-process: 0 ok, 2 bad input or settings (one
line on stderr: argparse's message or a ``CHSNetError``) and a GPU or the computer that ran out of
memory (one line naming what to change: :func:`user_error`), 1 internal error (traceback on stderr), 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM, as ``timeout`` and SLURM send it; it raises ``Terminated`` so that
the same cleanup as Ctrl-C's runs), 141 (as a shell reports SIGPIPE) when the reader of stdout went
away, e.g. ``chsnet info | head``.
Heavy modules (torch, the networks) are imported by the subcommands when they run.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Sequence

from napari_chsnet.errors import CHSNetError, DeviceMemoryError
from napari_chsnet.interrupts import INTERRUPTED_EXIT, TERMINATED_EXIT, Terminated, sigterm_raises

PROG = "chsnet"
BROKEN_PIPE_EXIT = 141
# Subcommands written elsewhere: registered when their module exists (each has add_parser and run).
_OPTIONAL_SUBCOMMANDS = ("napari_chsnet.cli.train", "napari_chsnet.cli.finetune")
# (what ran, what to change) when a command runs out of (GPU) memory: a user error, not a bug.
OUT_OF_MEMORY = {
    "segment": ("segmentation", "lower --batch-size or use --device cpu"),
    "evaluate": ("evaluation", "use --device cpu"),
    "finetune": ("fine-tuning", "lower --batch-size or use --device cpu"),
    "train": ("training", "lower batch_size or set device: cpu in the config"),
}
HOST_MEMORY_ADVICE = "close other programs or use a computer with more memory"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("napari-chsnet")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    from napari_chsnet.cli import evaluate, info, segment

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Lung and COVID-19 infection segmentation of chest CT with per-lung severity reports "
        "(CHS-Net, EAMC, Residual Dilated U-Net). Research tool, not for clinical diagnosis.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (segment, evaluate, info):
        module.add_parser(subparsers)
    for name in _OPTIONAL_SUBCOMMANDS:
        if importlib.util.find_spec(name) is None:
            continue  # not written yet: the subcommand is simply absent
        module = importlib.import_module(name)
        module.add_parser(subparsers)
        command = subparsers.choices.get(name.rsplit(".", 1)[1])
        if command is not None and command.get_default("run") is None:
            command.set_defaults(run=module.run)
    return parser


def user_error(command: str | None, error: BaseException) -> CHSNetError | None:
    """``error`` as the user is told it (one line, exit code 2): a :class:`CHSNetError` as it is, an
    out-of-memory error (CUDA, MPS) as a ``DeviceMemoryError`` that says what to lower; ``None`` for the
    rest (bugs). Call ``release_device_memory`` after the ``except`` block that caught ``error``."""
    if isinstance(error, CHSNetError):
        return error
    what, advice = OUT_OF_MEMORY.get(command or "", ("the run", "lower the batch size or use the CPU"))
    if isinstance(error, MemoryError) and "out of memory" not in str(error).lower():
        # the computer's own memory (numpy's "Unable to allocate 1.2 GiB for an array …"), not a GPU's:
        # a case of a batch that fails so is one failed case, as in napari
        words = " ".join(str(error).split()) or "MemoryError"
        return DeviceMemoryError(f"{what} ran out of memory ({words}); {HOST_MEMORY_ADVICE}")
    if "torch" not in sys.modules:  # only torch runs out of GPU memory (and importing it here could fail)
        return None
    from napari_chsnet.inference.device import is_out_of_memory, out_of_memory_error

    if not is_out_of_memory(error):
        return None
    return out_of_memory_error(error, what, advice)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``chsnet`` with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        if getattr(args, "run", None) is None:
            parser.print_help(sys.stderr)
            return 2
        with sigterm_raises():
            code = int(args.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers below
        return code
    except SystemExit as stop:  # argparse: --help, --version, or a usage error (already printed)
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
    except CHSNetError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"{PROG}: terminated (SIGTERM)", file=sys.stderr)
        return TERMINATED_EXIT
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT
    except BrokenPipeError:  # not a bug: the pipe's reader closed early
        _silence_stdout()
        return BROKEN_PIPE_EXIT
    except Exception as error:
        said = user_error(getattr(args, "command", None), error)  # out of memory: told as a user error
        if said is not None:
            print(f"{PROG}: error: {said}", file=sys.stderr)
            return 2
        # a bug, not a user error: keep the traceback for the report
        traceback.print_exc()
        print(
            f"{PROG}: internal error ({type(error).__name__}); please report it with the traceback above",
            file=sys.stderr,
        )
        return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both of the first two
        pass  # stdout is not a file (tests capture it): nothing is left to flush


def run() -> None:
    """Console entry point (``chsnet``)."""
    sys.exit(main())
