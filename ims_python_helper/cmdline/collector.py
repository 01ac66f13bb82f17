"""The CLI process's garbage collector: no collections while the modules load, none over them afterwards.

A CLI run imports botocore, boto3 and requests and loads an S3 model:
about a hundred thousand objects that live as long as the process and are
never garbage. CPython's cyclic collector walks them all the same, during the
imports, on every full collection of the run, and once more when the
interpreter ends, where it also takes the whole world apart object by object
just before the process exits. For a publish of three 4 KiB files that was
0.17 of its 0.52 CPU seconds (BENCHMARKS.md, issue 20), paid again by every
command a job pod runs.

So the process that runs the CLI (``python -m ims_python_helper`` and the
console script, never a library caller's process) collects nothing while it
imports, then moves what exists into the collector's permanent generation
(``gc.freeze``) and collects as usual from there; and before it exits it
freezes everything again, so the interpreter's last collections have nothing
to walk. Garbage made during the run is still collected during the run; what
is left at the end is given back with the process's memory, and files are
closed and flushed by the code that opened them (``with``), not by the
collector.
"""

from __future__ import annotations

import gc


def pause() -> None:
    """No collections until ``resume``: call before the imports (``__main__``)."""
    gc.disable()


def resume() -> None:
    """What exists now is never walked again; collect as usual from here."""
    gc.freeze()
    gc.enable()


def before_exit() -> None:
    """Leave the run's objects to the process's end instead of to the interpreter's last collections."""
    gc.freeze()
