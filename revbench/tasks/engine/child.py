"""A child process that never outlives its parent (`revbench run`, an engine worker).

``run_module(module, args)`` runs ``python -m module args`` (the benchmark suite's pytest) and returns its exit
status. The child dies with its parent:
- it lives in a session (and process group) of its own, so a Ctrl-C in the terminal reaches only the parent,
  which then stops the whole group (SIGTERM, then SIGKILL after a grace period) before it re-raises;
- on Linux it asks the kernel for SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``), so even a SIGKILL
  of the parent, which no handler sees, takes it down.

The child is started through this module (``python -m revbench.tasks.engine.child PARENT_PID MODULE ARGS...``): it
sets the parent-death signal in its own, single-threaded interpreter (no ``preexec_fn`` in a parent that may hold
threads), checks that its parent is still the one that started it (the parent may die before the prctl), then
runs ``MODULE`` as ``python -m`` would.
"""
from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1        # <linux/prctl.h>
GRACE_S = 3.0               # how long a stopped child may take to exit on SIGTERM before it is killed


def start(module: str, args: list[str], **popen) -> subprocess.Popen:
    """Start ``python -m module args`` in a child that dies with this process (``popen``: cwd, env, stdout, ...);
    stop it with ``stop``."""
    cmd = [sys.executable, "-m", __name__, str(os.getpid()), module, *args]
    return subprocess.Popen(cmd, start_new_session=True, **popen)


def run_module(module: str, args: list[str], **popen) -> int:
    """Run ``python -m module args`` in a child that dies with this process; its exit status. On any exception
    while waiting (KeyboardInterrupt included) the child's process group is stopped before the exception goes on."""
    proc = start(module, args, **popen)
    try:
        return proc.wait()
    except BaseException:
        stop(proc)
        raise


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the child's process group, SIGKILL it after ``GRACE_S`` seconds (or at a second Ctrl-C), reap it."""
    try:
        _signal_group(proc, signal.SIGTERM)
        proc.wait(GRACE_S)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        pass
    _signal_group(proc, signal.SIGKILL)
    proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    if proc.returncode is None:          # not reaped yet: its pid (= its group id) cannot have been reused
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def die_with_parent(parent: int) -> None:
    """Ask for SIGKILL when the parent process dies (Linux); exit at once if ``parent`` is already gone."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            print(f"revbench: warning: prctl(PR_SET_PDEATHSIG) failed ({os.strerror(ctypes.get_errno())}): "
                  "this worker may outlive a killed parent", file=sys.stderr)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


def _child_main(argv: list[str]) -> None:
    parent, module, *args = argv
    die_with_parent(int(parent))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
