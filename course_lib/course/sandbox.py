"""Where a student's notebook runs: a private folder, a scrubbed environment, a memory limit, no survivors.

Every submission runs in a fresh temporary folder (a copy of the notebook only), in a kernel whose
environment holds only :data:`PASSED_VARIABLES` (no instructor secrets; ``HOME`` and ``TMPDIR`` point
into the private folder), whose memory is capped (``RLIMIT_DATA`` on Linux, ``RLIMIT_AS`` elsewhere; set
by this file, run as the kernel's launcher, before it execs the kernel), and whose whole process tree is
killed when the notebook ends (:func:`kill_process_tree`, which also finds children that left the process
group with ``start_new_session``; the grader becomes a child subreaper on Linux, so a double-forked daemon
is re-parented to it and swept by :func:`kill_stray_children`, after each notebook and when grading ends).

Two modes (``--sandbox``):
    process    the above, on any POSIX machine.
    namespace  the above inside ``unshare`` (Linux user namespaces): no network at all, and the
               course folder and the submissions folder mounted read-only for the student's code.

The files student code could damage (solutions, checkers, submissions) are also snapshotted before any
student code runs and restored if changed (:class:`ProtectedFiles`), whatever the mode.

Run as a script (``python sandbox.py --memory BYTES [--read-only DIR ...] -- COMMAND...``) this module is
the kernel's launcher; that part imports only the standard library.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

PASSED_VARIABLES = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "OMP_NUM_THREADS",
                    "MKL_NUM_THREADS", "COURSE_DATA", "COURSE_PROFILE", "COURSE_PROGRESS",
                    "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "CUDA_VISIBLE_DEVICES")
SANDBOX_MODES = ("process", "namespace")
_PR_SET_CHILD_SUBREAPER = 36


def scrubbed_environment(home: Path) -> dict[str, str]:
    """The kernel's whole environment: :data:`PASSED_VARIABLES` from ours, and a private HOME and TMPDIR."""
    env = {name: os.environ[name] for name in PASSED_VARIABLES if name in os.environ}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "/usr/bin:/bin")])
    for name in ("HOME", "TMPDIR", "MPLCONFIGDIR"):
        env[name] = str(home)
    return env


@functools.lru_cache(maxsize=None)
def namespace_available() -> bool:
    """Whether ``unshare`` can give an unprivileged process its own user, mount and network namespaces."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "-rmn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def launcher_prefix(memory_bytes: int, mode: str, read_only: list[Path]) -> list[str]:
    """The command that starts the kernel command after it inside the sandbox of ``mode``."""
    if mode not in SANDBOX_MODES:
        raise ValueError(f"unknown sandbox mode {mode!r}: choose one of {', '.join(SANDBOX_MODES)}")
    prefix = [sys.executable, "-I", str(Path(__file__).resolve()), "--memory", str(memory_bytes)]
    if mode == "namespace":
        if not namespace_available():
            raise RuntimeError("--sandbox namespace needs Linux user namespaces (`unshare -rmn true` fails here); "
                               "use --sandbox process")
        prefix = ["unshare", "-rmn", "--", *prefix]
        for folder in read_only:
            prefix += ["--read-only", str(folder.resolve())]
    return [*prefix, "--"]


def become_subreaper() -> None:
    """Orphaned descendants of this process are re-parented to it instead of init (Linux; else nothing)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def _children(pid: int) -> list[int]:
    """The direct children of ``pid`` (Linux /proc; empty elsewhere or once it is gone)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, parents first."""
    tree, index = [pid], 0
    while index < len(tree):
        tree += [child for child in _children(tree[index]) if child not in tree]
        index += 1
    return tree


def kill_process_tree(pid: int) -> None:
    """SIGKILL ``pid``'s process group and every descendant, whatever session or group it moved to."""
    tree = process_tree(pid)
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    for member in tree:
        try:
            os.kill(member, signal.SIGKILL)
        except OSError:
            pass


def _is_kernel(pid: int) -> bool:
    try:
        return b"ipykernel_launcher" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def children() -> set[int]:
    """This process's children now (Linux; empty elsewhere)."""
    return set(_children(os.getpid()))


def kill_stray_children(spare: set[int], spare_kernels: bool) -> None:
    """Kill (and reap) this process's children except ``spare`` (those it had before grading began):
    orphans re-parented to the subreaper, e.g. a daemon a student's notebook double-forked. With
    ``spare_kernels``, processes that run a kernel are left alone too (other notebooks being graded at the
    same time; a process that only pretends to be one is killed by the last sweep, ``spare_kernels=False``,
    when grading ends). Linux only."""
    for child in _children(os.getpid()):
        if child in spare or (spare_kernels and _is_kernel(child)):
            continue
        kill_process_tree(child)
        for _ in range(50):
            try:
                if os.waitpid(child, os.WNOHANG)[0]:
                    break
            except ChildProcessError:
                break
            time.sleep(0.01)


class ProtectedFiles:
    """The bytes of files student code must not change, read once; :meth:`restore` puts back any changed."""

    def __init__(self, paths: list[Path]) -> None:
        self._content = {path: path.read_bytes() for path in paths if path.is_file()}
        self.digest = hashlib.sha256(b"".join(self._content.values())).hexdigest()

    def restore(self) -> list[Path]:
        """Rewrite every protected file that changed or vanished; return those."""
        changed = []
        for path, content in self._content.items():
            try:
                same = path.read_bytes() == content
            except OSError:
                same = False
            if not same:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
                changed.append(path)
        return changed


def _launch(argv: list[str]) -> None:
    """The launcher: apply the limits and mounts named in ``argv``, then exec the command after ``--``."""
    import resource

    split = argv.index("--")
    options, command = argv[:split], argv[split + 1:]
    read_only = [options[i + 1] for i, option in enumerate(options) if option == "--read-only"]
    memory = int(options[options.index("--memory") + 1])
    for folder in read_only:
        subprocess.run(["mount", "--bind", folder, folder], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", folder], check=True)
    # Linux: RLIMIT_DATA counts the memory a process writes to (heap, anonymous maps) but not address space
    # merely reserved, which CUDA reserves by the terabyte; elsewhere the address space is all there is.
    limit = resource.RLIMIT_DATA if sys.platform.startswith("linux") else resource.RLIMIT_AS
    resource.setrlimit(limit, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.execvp(command[0], command)


if __name__ == "__main__":
    _launch(sys.argv[1:])
