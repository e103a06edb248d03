"""Child processes that end with the recorder, however it ends.

Every process the recorder starts (an X server, a game) runs in its own process group and is asked
to die with its parent (Linux's parent-death signal), so a recorder killed with SIGKILL leaves
nothing behind; `Children.close()` ends the groups on a normal exit, an error or Ctrl-C, and
`die_with_parent()` gives pool workers the same rule.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time

_PR_SET_PDEATHSIG = 1


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def die_with_parent(parent: int | None = None) -> None:
    """Make the calling process receive SIGKILL when its parent ends. `parent`: the pid expected as
    parent; if it has already gone (the race between fork and this call), exit at once."""
    _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent is not None and os.getppid() != parent:
        os._exit(1)


class Children:
    """The processes one worker started; `close()` (or leaving a `with` block) ends them all."""

    def __init__(self):
        self._procs: list[subprocess.Popen] = []

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start argv in a new session (its own process group) that gets SIGKILL when this thread ends.

        util-linux's setpriv sets the parent-death signal and then runs argv; a preexec function
        would do the same but is unsafe once the recorder runs threads (its log reader).
        """
        proc = subprocess.Popen(["setpriv", "--pdeathsig", "KILL", "--", *argv], start_new_session=True, **kwargs)
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, grace_s: float = 2.0) -> None:
        """End one process group: SIGTERM, then SIGKILL after `grace_s`."""
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        _reap_group(proc.pid)
        if proc in self._procs:
            self._procs.remove(proc)

    def close(self) -> None:
        for proc in reversed(list(self._procs)):     # the game before the X server it draws on
            self.stop(proc)


def _reap_group(pgid: int) -> None:
    """SIGKILL whatever is left in a process group (helpers its leader started) and give it a moment."""
    for _ in range(50):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.01)
