"""Run a notebook from top to bottom in a fresh kernel: one executor for the runner and the grader.

The kernel is always the Python that runs this code (``sys.executable``), whatever kernels the
machine has registered, so a notebook sees exactly the packages of the environment that started it.

A cell that runs longer than ``timeout`` seconds is interrupted and recorded as an error named
``CellTimeoutError``; a kernel that dies (``os._exit``, out of memory, a crash in C code) is
recorded as an error named ``DeadKernelError`` on the cell that killed it. After a kernel death,
or a timed-out cell that ignores the interrupt (the kernel is then stopped), the remaining cells
are not run: their ``execution_count`` stays ``None``.

Example::

    nb = nbformat.read("notebooks/03_maml.ipynb", as_version=4)
    executed = execute_notebook(nb, cwd=Path("notebooks"), env={"COURSE_PROFILE": "quick"})
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import copy
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import nbformat
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbclient.util import run_sync

TIMEOUT_ERROR = "CellTimeoutError"
DEAD_KERNEL_ERROR = "DeadKernelError"

# Seconds a kernel gets to leave a cell after the timeout interrupted it, before it is stopped.
INTERRUPT_GRACE_SECONDS = 10


class NotebookCellError(Exception):
    """A cell of an executed notebook raised an error, timed out, or killed the kernel.

    Attributes:
        cell_index: position of the cell among all cells of the notebook, from 0.
        first_line: the first line of the cell's source, to recognise the cell.
        ename, evalue: the error's name and message, as the kernel reported them.
        code_cell_number: position of the cell among the code cells, from 1.
        notebook: the executed copy up to and including the failing cell (its error in the outputs).
    """

    def __init__(self, cell_index: int, first_line: str, ename: str, evalue: str,
                 code_cell_number: int, notebook: nbformat.NotebookNode | None = None) -> None:
        self.notebook = notebook
        self.cell_index = cell_index
        self.first_line = first_line
        self.ename = ename
        self.evalue = evalue
        self.code_cell_number = code_cell_number
        super().__init__(
            f"code cell {code_cell_number} (cell index {cell_index}) failed with "
            f"{ename}: {evalue}\n  the cell begins with: {first_line}"
        )


@dataclass
class KernelLaunch:
    """How the grader starts a kernel (the runner uses the defaults: none of this).

    Attributes:
        prefix: a command that starts the kernel command given after it (e.g. a sandbox launcher).
        env: the kernel's whole environment, instead of ``os.environ`` plus ``env``.
        output: a file for the kernel process's own stdout and stderr (what ``os.write(1, ...)``
            writes), instead of this process's terminal.
        on_start: called with the kernel's process id once it runs.
        on_end: called with the kernel's process id before the kernel is shut down, e.g. to kill
            whatever it started.
    """

    prefix: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None
    output: IO | None = None
    on_start: Callable[[int], None] | None = None
    on_end: Callable[[int], None] | None = None


class _CurrentPythonKernelSpecs(KernelSpecManager):
    """Answers every kernel name with an IPython kernel run by the current interpreter."""

    def __init__(self, prefix: list[str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.prefix = list(prefix or [])

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return KernelSpec(
            argv=[*self.prefix, sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name=f"Python {sys.version_info.major}.{sys.version_info.minor}",
            language="python",
        )


def _kernel_manager(socket_dir: tempfile.TemporaryDirectory, prefix: list[str]) -> AsyncKernelManager:
    """A kernel manager that talks to its kernel over IPC sockets in a private folder.

    Not TCP on localhost: no port is opened to other users of the machine, and the kernel has no
    "running over TCP without encryption" warning to print into the user's terminal. The socket path is
    absolute, since the kernel runs in the notebook's folder.
    """
    return AsyncKernelManager(kernel_spec_manager=_CurrentPythonKernelSpecs(prefix), transport="ipc",
                              ip=str(Path(socket_dir.name) / "kernel"))


def _kernel_env(env: dict[str, str] | None) -> dict[str, str]:
    """os.environ plus ``env``, with this interpreter's folder first on PATH (so ``!python`` agrees)."""
    kernel_env = {**os.environ, **(env or {})}
    kernel_env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), kernel_env.get("PATH", "")])
    return kernel_env


def _record_error(cell: nbformat.NotebookNode, ename: str, evalue: str) -> None:
    """Replace the cell's error output (if any) by ``ename: evalue``, keeping its traceback."""
    old_traceback = [line for out in cell.outputs if out.output_type == "error" for line in out.traceback]
    cell.outputs = [out for out in cell.outputs if out.output_type != "error"]
    cell.outputs.append(nbformat.v4.new_output(
        "error", ename=ename, evalue=evalue, traceback=[*old_traceback, f"{ename}: {evalue}"]
    ))


async def _run_cell(client: NotebookClient, cell: nbformat.NotebookNode, index: int, number: int,
                    timeout: int | None) -> bool:
    """Execute one code cell; record a timeout or a kernel death as the cell's error.

    A watchdog interrupts the kernel after ``timeout`` seconds and stops it if the cell is still
    running ``INTERRUPT_GRACE_SECONDS`` later. Returns whether the kernel can run the next cell.
    """
    stage = "running"

    async def watchdog() -> None:
        nonlocal stage
        await asyncio.sleep(timeout)
        stage = "interrupted"
        await client.km.interrupt_kernel()
        await asyncio.sleep(INTERRUPT_GRACE_SECONDS)
        stage = "stopped"
        await client.km.shutdown_kernel(now=True)

    watch = asyncio.ensure_future(watchdog()) if timeout else None
    try:
        await client.async_execute_cell(cell, index, execution_count=number)
    except DeadKernelError:
        cell.execution_count = number
        if stage == "stopped":
            _record_error(cell, TIMEOUT_ERROR, f"the cell did not finish within {timeout} s and "
                          "ignored the interrupt; the remaining cells were not run")
        else:
            _record_error(cell, DEAD_KERNEL_ERROR, "the kernel died while running this cell; "
                          "the remaining cells were not run")
        return False
    finally:
        if watch is not None:
            watch.cancel()
    if stage == "interrupted":
        _record_error(cell, TIMEOUT_ERROR, f"the cell did not finish within {timeout} s and was interrupted")
    return True


async def run_extra_cell(client: NotebookClient, source: str, timeout: int | None) -> nbformat.NotebookNode:
    """Run ``source`` in the client's kernel as a cell that is not part of the notebook; return the cell
    with its outputs (a timeout or kernel death recorded as in the notebook's own cells)."""
    cell = nbformat.v4.new_code_cell(source)
    client.nb.cells.append(cell)  # nbclient addresses a cell by its index; it leaves again below
    try:
        await _run_cell(client, cell, len(client.nb.cells) - 1, len(client.nb.cells), timeout)
    finally:
        client.nb.cells.remove(cell)
    return cell


async def _run_cells(client: NotebookClient, timeout: int | None, allow_errors: bool, budget: float | None,
                     launch: KernelLaunch, after: Callable[[NotebookClient], Awaitable[None]] | None,
                     **kernel_args) -> None:
    """Start the kernel, run the code cells in order (then ``after``), stop the kernel.

    With a ``budget`` (seconds for the whole notebook), each cell's timeout is cut to what is left of it,
    and once it is spent the remaining cells are not run.
    """
    deadline = None if budget is None else time.monotonic() + budget
    async with client.async_setup_kernel(cleanup_kc=True, **kernel_args):
        pid = getattr(client.km.provisioner, "pid", None)
        if launch.on_start is not None and pid is not None:
            launch.on_start(pid)
        try:
            cells = client.nb.cells
            code_cells = [(index, cell) for index, cell in enumerate(cells) if cell.cell_type == "code"]
            kernel_usable = True
            for number, (index, cell) in enumerate(code_cells, start=1):
                cell_timeout = timeout
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left < 1:
                        break
                    cell_timeout = max(1, int(min(timeout or left, left)))
                kernel_usable = await _run_cell(client, cell, index, number, cell_timeout)
                error = next((out for out in cell.outputs if out.output_type == "error"), None)
                if error is not None and not allow_errors:
                    first_line = cell.source.strip().split("\n")[0]
                    raise NotebookCellError(index, first_line, error.ename, error.evalue, number, client.nb)
                if not kernel_usable:
                    break
            if after is not None and kernel_usable:
                await after(client)
        finally:
            if launch.on_end is not None and pid is not None:
                launch.on_end(pid)


@contextlib.contextmanager
def _no_atexit_cleanup(client: NotebookClient):
    """nbclient leaves its exit-time cleanup registered when a kernel dies while starting; drop it."""
    try:
        yield
    finally:
        atexit.unregister(client._cleanup_kernel)


def execute_notebook(nb: nbformat.NotebookNode, *, cwd: Path, timeout: int | None = 600,
                     allow_errors: bool = False, env: dict[str, str] | None = None,
                     launch: KernelLaunch | None = None, budget: float | None = None,
                     after: Callable[[NotebookClient], Awaitable[None]] | None = None,
                     ) -> nbformat.NotebookNode:
    """Execute every code cell of ``nb`` in a fresh kernel of the current Python; return a copy.

    Args:
        nb: the notebook; it is left unchanged, and the copy's old outputs are cleared first.
        cwd: the kernel's working directory (usually the notebook's folder).
        timeout: seconds each cell may run before it is interrupted; ``None`` for no limit.
        allow_errors: go on after a failing cell (its error stays in its outputs) instead of
            raising ``NotebookCellError``.
        env: environment variables for the kernel, on top of ``os.environ`` (or of ``launch.env``).
        launch: how to start the kernel (the grader's sandbox); by default as a plain child process.
        budget: seconds for the whole notebook; cells that would start after it are not run.
        after: a coroutine run with the notebook client once the cells ran, while the kernel still
            lives (the grader's calls of the student's functions); not run after a kernel death.

    Raises:
        NotebookCellError: a cell failed (raised, timed out, killed the kernel) and
            ``allow_errors`` is False.
    """
    nb = copy.deepcopy(nb)
    launch = launch or KernelLaunch()
    socket_dir = tempfile.TemporaryDirectory(prefix="course-kernel-")
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    client = NotebookClient(
        nb,
        km=_kernel_manager(socket_dir, launch.prefix),
        timeout=None,  # the watchdog in _run_cell enforces the timeout
        allow_errors=True,  # _run_cells raises NotebookCellError itself
    )
    with socket_dir, _no_atexit_cleanup(client):
        kernel_env = _kernel_env(env) if launch.env is None else {**launch.env, **(env or {})}
        output = {} if launch.output is None else {"stdout": launch.output, "stderr": launch.output}
        run_sync(_run_cells)(client, timeout, allow_errors, budget, launch, after, cwd=str(cwd), env=kernel_env,
                             **output)
    return nb
