"""The ``handprop`` program's entry (``[project.scripts]`` in pyproject.toml): holds Ctrl-C from the
moment it is imported, then runs :func:`handprop_jax.cli.main`.

pip's console script imports this module, runs a line of its own (a regular expression on
``sys.argv[0]``) and only then calls :func:`main`; a Ctrl-C in between would escape as a
KeyboardInterrupt traceback and exit −2. So importing this module installs the SIGINT handler
(:func:`handprop_jax.errors.hold_interrupts`: it only counts), and ``cli.main`` adopts it: a Ctrl-C
from here on is one line and exit code 130, and the handler stays installed, only counting, while
the interpreter exits. Only the program imports this module (tests and embedding call
``handprop_jax.cli.main``, which restores the SIGINT handler it found).
"""

from __future__ import annotations

from handprop_jax.errors import hold_interrupts

hold_interrupts()

from handprop_jax.cli import main  # noqa: E402  (after the handler: the import takes milliseconds)

__all__ = ["main"]
