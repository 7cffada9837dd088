"""User code (Python graders, reward functions) in a child process: `python -I` in an empty folder, with limits
set before the user's code is read (RLIMIT_AS for memory, RLIMIT_CPU, RLIMIT_FSIZE: no file it writes, its output
included, grows past 8 MB), and a wall-clock limit after which its whole process group is killed.
Where `unshare` can make namespaces (Linux; root or unprivileged user namespaces), the child also gets no network
and its own process IDs and /proc, so it cannot read the server's environment through /proc/<pid>/environ.

It still runs as the server's user and can read the files that user can: this is not a security boundary, which is
why user code runs only where the operator turned it on (TUNELOOP_ALLOW_PYTHON_GRADERS=1)."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
from typing import Any

MAX_OUTPUT = 8 << 20
"""Bytes of the child's output read at most (the rest is dropped, and the answer then does not parse)."""

_LIMITS = r"""
import resource, sys
_seconds, _megabytes = float(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (_megabytes << 20, _megabytes << 20))
_cpu = max(1, int(_seconds + 0.999))
resource.setrlimit(resource.RLIMIT_CPU, (_cpu, _cpu + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, 8 << 20))
"""


@functools.lru_cache(maxsize=1)
def isolation() -> list[str]:
    """The `unshare` prefix that gives a child no network and its own PIDs and /proc, or nothing where it fails."""
    command = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc", "--net"]
    try:
        done = subprocess.run([*command, "true"], capture_output=True, timeout=10)
        return command if done.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired):
        return []


class Failed(Exception):
    """The child gave no answer: `kind` is 'timeout', 'memory', 'cpu time limit' or an exit code."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


def run(body: str, payload: Any, seconds: float, megabytes: int, args: list[str] | None = None,
        path: str | None = None) -> Any:
    """Run `body` (Python that reads JSON from stdin and prints one JSON line) under the limits; its last output
    line, parsed. `path`: a folder put first on the child's import path (a reward function's module)."""
    code = _LIMITS + (f"sys.path.insert(0, {path!r})\n" if path else "") + body
    with tempfile.TemporaryDirectory(prefix="tuneloop-user-code-") as folder, \
            tempfile.TemporaryFile(dir=folder) as output:
        process = subprocess.Popen([*isolation(), sys.executable, "-I", "-c", code, str(seconds), str(megabytes),
                                    *(args or [])], stdin=subprocess.PIPE, stdout=output,
                                   stderr=subprocess.DEVNULL, cwd=path or folder, start_new_session=True,
                                   env={"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0"})
        try:
            process.communicate(json.dumps(payload, default=str).encode(), timeout=seconds)
        except subprocess.TimeoutExpired:
            raise Failed("timeout") from None
        finally:
            _kill(process)
        output.seek(0)
        text = output.read(MAX_OUTPUT).decode("utf-8", errors="replace").strip()
    try:
        return json.loads(text.splitlines()[-1])
    except (ValueError, IndexError, RecursionError):
        code = process.returncode
        raise Failed("cpu time limit" if code in (-signal.SIGXCPU, -signal.SIGKILL) else
                     "memory" if code == 137 else f"exit code {code}") from None


def _kill(process: subprocess.Popen) -> None:
    """The child and anything it started (its own session's process group)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
