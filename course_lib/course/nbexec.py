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
import copy
import os
import sys
import tempfile
from pathlib import Path

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


class _CurrentPythonKernelSpecs(KernelSpecManager):
    """Answers every kernel name with an IPython kernel run by the current interpreter."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name=f"Python {sys.version_info.major}.{sys.version_info.minor}",
            language="python",
        )


def _kernel_manager(socket_dir: tempfile.TemporaryDirectory) -> AsyncKernelManager:
    """A kernel manager that talks to its kernel over IPC sockets in a private folder.

    Not TCP on localhost: no port is opened to other users of the machine, and the kernel has no
    "running over TCP without encryption" warning to print into the user's terminal. The socket path is
    absolute, since the kernel runs in the notebook's folder.
    """
    return AsyncKernelManager(kernel_spec_manager=_CurrentPythonKernelSpecs(), transport="ipc",
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


async def _run_cells(client: NotebookClient, timeout: int | None, allow_errors: bool,
                     **kernel_args: str) -> None:
    """Start the kernel, run the code cells in order, stop the kernel."""
    async with client.async_setup_kernel(cleanup_kc=True, **kernel_args):
        cells = client.nb.cells
        code_cells = [(index, cell) for index, cell in enumerate(cells) if cell.cell_type == "code"]
        for number, (index, cell) in enumerate(code_cells, start=1):
            kernel_usable = await _run_cell(client, cell, index, number, timeout)
            error = next((out for out in cell.outputs if out.output_type == "error"), None)
            if error is not None and not allow_errors:
                first_line = cell.source.strip().split("\n")[0]
                raise NotebookCellError(index, first_line, error.ename, error.evalue, number, client.nb)
            if not kernel_usable:
                break


def execute_notebook(nb: nbformat.NotebookNode, *, cwd: Path, timeout: int | None = 600,
                     allow_errors: bool = False, env: dict[str, str] | None = None,
                     ) -> nbformat.NotebookNode:
    """Execute every code cell of ``nb`` in a fresh kernel of the current Python; return a copy.

    Args:
        nb: the notebook; it is left unchanged, and the copy's old outputs are cleared first.
        cwd: the kernel's working directory (usually the notebook's folder).
        timeout: seconds each cell may run before it is interrupted; ``None`` for no limit.
        allow_errors: go on after a failing cell (its error stays in its outputs) instead of
            raising ``NotebookCellError``.
        env: environment variables for the kernel, on top of ``os.environ``.

    Raises:
        NotebookCellError: a cell failed (raised, timed out, killed the kernel) and
            ``allow_errors`` is False.
    """
    nb = copy.deepcopy(nb)
    socket_dir = tempfile.TemporaryDirectory(prefix="course-kernel-")
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    client = NotebookClient(
        nb,
        km=_kernel_manager(socket_dir),
        timeout=None,  # the watchdog in _run_cell enforces the timeout
        allow_errors=True,  # _run_cells raises NotebookCellError itself
    )
    with socket_dir:
        run_sync(_run_cells)(client, timeout, allow_errors, cwd=str(cwd), env=_kernel_env(env))
    return nb
