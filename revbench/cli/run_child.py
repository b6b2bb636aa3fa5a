"""A child process that never outlives `revbench run`: moved to ``revbench.tasks.engine.child`` (the engines
start their workers with it); kept here so that ``python -m revbench.cli.run_child`` and old imports still work."""
from __future__ import annotations

import sys

from revbench.tasks.engine.child import (GRACE_S, PR_SET_PDEATHSIG, _child_main, die_with_parent, run_module,
                                         start, stop)

__all__ = ["GRACE_S", "PR_SET_PDEATHSIG", "die_with_parent", "run_module", "start", "stop"]

if __name__ == "__main__":
    _child_main(sys.argv[1:])
