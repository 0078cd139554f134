"""`handprop` command line: one sub-command per module.

Each sub-command lives in the module that does the work; that module defines
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. This file only wires them
together, importing a module when its sub-command is used so that ``--help`` stays fast.

A user's error — ``config.ConfigError`` (a bad ``--set`` or config file) or ``errors.UserError`` (a bad
file, path or run folder) — is one line on stderr and exit code 2, never a traceback; Ctrl-C is one
line and exit code 130 (``handprop train`` names the step to resume from); a full disk is one line,
exit code 2.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing's (an import of ~10 ms before main() can handle Ctrl-C)
if TYPE_CHECKING:  # the rest is imported in main(), after its Ctrl-C handling is in place
    import argparse

    from handprop_jax.errors import Interrupts

COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module, one-line help)
    "data": ("handprop_jax.data.cli", "build a dataset (synthetic_hand_video, ho3d, interhand26m, "
                                      "hand_videos) or export one"),
    "train": ("handprop_jax.training.cli", "train the three stages and the baseline control"),
    "pretrain": ("handprop_jax.training.pretrain", "pretrain the predictor on the synthetic source set "
                                                   "and store its weights"),
    "evaluate": ("handprop_jax.evaluation.cli", "write Table I (Markdown, CSV, JSON) for a run"),
    "propagate": ("handprop_jax.propagation.cli", "propagate sparse labels to every frame of a video"),
    "score": ("handprop_jax.evaluation.score", "score propagated annotations against ground-truth "
                                               "annotations (Table I metrics, by gap)"),
    "visualize": ("handprop_jax.visualize", "overlay grids and training curves for a run"),
    "demo": ("handprop_jax.demo", "build data, train, evaluate and report on the synthetic default"),
}


def build_parser(load_all: bool = True, only: str | None = None) -> argparse.ArgumentParser:
    import argparse
    import importlib

    parser = argparse.ArgumentParser(
        prog="handprop",
        description="Semi-supervised 3D hand shape and pose estimation by label propagation (JAX).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = None
        if load_all or name == only:
            module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=getattr(module, "__doc__", None) or help_text,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if module is not None:
            module.add_arguments(p)
            p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a sub-command. Without ``argv`` (the ``handprop`` program), ``train`` and ``demo`` on the
    CPU backend first re-execute the process with glibc's malloc huge pages on
    (:mod:`handprop_jax.hostmem`: fewer page faults per XLA:CPU train step); with ``argv`` (tests,
    embedding) the command runs in this process as it is.

    Ctrl-C is handled from the first line on (in the program, from the import of
    :mod:`handprop_jax.program`), for every command alike: the SIGINT handler
    (:func:`handprop_jax.errors.watch_interrupts`) is installed before anything heavy is imported; a
    SIGINT that arrives while XLA compiles or a module is imported takes effect when that ends
    (cutting it short crashes the process or breaks the import); one held across the huge-page
    re-execution is delivered in the new process; every one ends as one line and exit code 130, also
    when what it cut short raised something else. The program (:mod:`handprop_jax.program`, or
    ``python -m handprop_jax.cli``) keeps its handler, only counting, while it exits, so that a late
    Ctrl-C cannot kill the interpreter's teardown; called in-process (tests, embedding; with or without
    ``argv``), ``main`` restores the SIGINT handler it found before it returns."""
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in words if a in COMMANDS), None)
    name = "handprop" + (f" {command}" if command else "")
    try:
        from handprop_jax.errors import InterruptedRun, watch_interrupts

        with watch_interrupts() as interrupts:
            try:
                from handprop_jax import hostmem

                hostmem.release_held_interrupt()  # one that arrived during the re-execution, if any
                if argv is None and hostmem.command_pays_off(words):
                    _reexec(hostmem, interrupts)
                code = _run(words, command, name)
                interrupts.check()  # one whose KeyboardInterrupt a callback swallowed, or still waiting
                interrupts.settle()
                return code
            except KeyboardInterrupt as e:  # one line (training names the step to resume from)
                interrupts.settle()
                print(f"{name}: {_one_line(e) if isinstance(e, InterruptedRun) else 'interrupted'}",
                      file=sys.stderr)
                return 130
            except Exception:  # after a Ctrl-C: what it broke (e.g. an import it cut short: ImportError)
                if not interrupts.count:
                    raise
                interrupts.settle()
                print(f"{name}: interrupted", file=sys.stderr)
                return 130
    except KeyboardInterrupt:  # before the handler was in place
        print(f"{name}: interrupted", file=sys.stderr)
        return 130


def _reexec(hostmem, interrupts: Interrupts) -> None:
    """Re-execute with malloc huge pages unless a Ctrl-C has come: decided with SIGINT blocked, so that
    one counted but not raised yet (during an import) stops here and a later one is held across the
    re-execution (:func:`handprop_jax.hostmem.reexec_with_hugepages`)."""
    import signal

    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        interrupts.check()
        hostmem.reexec_with_hugepages()
    finally:  # no re-execution (or it failed): a SIGINT held meanwhile is delivered now
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _run(words: list[str], command: str | None, name: str) -> int:
    """Parse ``words`` and run the command; a user's error — ``config.ConfigError`` (a bad ``--set`` or
    config file), ``errors.UserError`` (a bad file, path or run folder), a syntax error in a config
    file of the user's, a full disk — is one line on stderr and exit code 2."""
    from pathlib import Path

    from handprop_jax import config as config_lib
    from handprop_jax.errors import UserError, disk_full

    parser = build_parser(load_all=False, only=command)
    args = parser.parse_args(words)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._module.run(args) or 0)
    except (config_lib.ConfigError, UserError) as e:  # a bad value, file, path, run folder: one line
        print(f"{name}: {_one_line(e)}", file=sys.stderr)
        return 2
    except SyntaxError as e:  # a config file of the user's (--config broken.py); ours never gets here
        if e.filename is None or Path(e.filename).resolve().is_relative_to(Path(__file__).resolve().parent):
            raise
        print(f"{name}: {e.filename}, line {e.lineno}: {e.msg} (a Python syntax error in "
              "the config file)", file=sys.stderr)
        return 2
    except Exception as e:  # a full disk is one line, however deep a library wrapped it
        full = disk_full(e)
        if full is None:
            raise
        print(f"{name}: disk full ({full}); free space and re-run", file=sys.stderr)
        return 2


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split("\n")).strip()


if __name__ == "__main__":  # python -m handprop_jax.cli: the program, as handprop_jax.program runs it
    from handprop_jax.errors import hold_interrupts

    hold_interrupts()
    sys.exit(main())
