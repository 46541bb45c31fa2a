"""Start and stop the native stack's servers as process groups, and wait for them.

TorchServe's launcher, its Java frontend and its Python workers are separate processes,
as are a Gunicorn master and its workers: each server is started as the leader of its
own session, so stopping it means signalling the whole group, and "stopped" means no
live process is left in it.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


class StartupError(RuntimeError):
    """A server did not come up; the message names its log."""


def process_table():
    """Return (pid, ppid, pgid) of every live (non-zombie) process."""
    table = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_file.read_text()
        except OSError:
            continue  # the process ended while we looked
        # The command name is in parentheses and may itself contain spaces or parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":
            table.append((int(stat_file.parent.name), int(fields[1]), int(fields[2])))
    return table


def group_members(pgid):
    """Return the PIDs of live (non-zombie) processes in process group `pgid`."""
    return [pid for pid, _, group in process_table() if group == pgid]


def children_of(pid):
    """Return the PIDs of the live direct children of `pid`."""
    return [child for child, parent, _ in process_table() if parent == pid]


def start_group(command, *, env, log_path, cwd):
    """Start `command` as a new process group logging to `log_path`; return the Popen."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_group(pgid, timeout_s=30.0, children_first=False, stop_signal=signal.SIGTERM):
    """Stop every process of the group; return True when none is left.

    `stop_signal` first (SIGTERM, or the server's own graceful signal, such as nginx's
    SIGQUIT), to the whole group or with `children_first` only to the leader's children,
    for a leader that does not pass signals on but waits for its child; then SIGKILL
    whatever is left after `timeout_s`.
    """
    if children_first:
        for child in children_of(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, stop_signal)
        if wait_for_exit(pgid, timeout_s):
            return True
    for sig, wait_s in ((stop_signal, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return True
        if wait_for_exit(pgid, wait_s):
            return True
    return not group_members(pgid)


def wait_for_exit(pgid, timeout_s):
    """Wait until the group has no live process; return True if it emptied in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reap_children()
        if not group_members(pgid):
            return True
        time.sleep(0.1)
    return False


def reap_children():
    """Collect exited children of this process so they do not linger as zombies."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def http_status(url, timeout_s=2.0):
    """Return the HTTP status of a GET to `url`, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (our own loopback URLs)
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None


def wait_until(ready, *, timeout_s, what, log_path, process=None, progress_every_s=None):
    """Poll `ready()` until true; raise StartupError naming the log on timeout or early exit.

    With `progress_every_s`, say on stderr every so often what is still awaited, so that a model
    that takes minutes to load is never minutes of silence.
    """
    start = time.monotonic()
    deadline = start + timeout_s
    next_report = start + (progress_every_s or timeout_s)
    while time.monotonic() < deadline:
        if ready():
            return
        if process is not None and process.poll() is not None:
            raise StartupError(f"{what} exited with status {process.returncode}; see {log_path}")
        if progress_every_s and time.monotonic() >= next_report:
            elapsed = time.monotonic() - start
            print(
                f"waiting for {what}: {elapsed:.0f} s of at most {timeout_s:.0f} s (log: {log_path})", file=sys.stderr
            )
            next_report += progress_every_s
        time.sleep(0.25)
    raise StartupError(f"{what} was not ready after {timeout_s:.0f}s; see {log_path}")
