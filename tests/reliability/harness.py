"""Run a Hydra entry point in-process the way the shell would, and capture how it ends.

A fresh interpreter per case costs ~5 s of imports; in-process the whole bad-input corpus runs in seconds,
and a few cases still go through a real subprocess to prove the exit code on the command line.
"""

from __future__ import annotations

import importlib
import io
import sys
import traceback
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass


@dataclass
class Ended:
    code: int
    stderr: str
    stdout: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error: ")]


def call(module: str, *args: str, attr: str = "main") -> Ended:
    """``python -m module args...`` in this process; returns exit code and output."""
    mod = importlib.import_module(module)
    entry = getattr(mod, attr)
    argv, err, out = sys.argv, io.StringIO(), io.StringIO()
    sys.argv = [module, *args]
    code = 0
    try:
        with redirect_stderr(err), redirect_stdout(out):
            result = entry()
            if isinstance(result, int):
                code = result
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except Exception:  # what the interpreter does with an uncaught exception: traceback, exit 1
        err.write(traceback.format_exc())
        code = 1
    finally:
        sys.argv = argv
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
    return Ended(code, err.getvalue(), out.getvalue())
