"""The grader's end of the channel: a student's function, called from the grader's process.

:class:`StudentKernel` wraps the kernel a student's notebook ran in; ``kernel.function("sample_episode")``
is a :class:`RemoteFunction`, a callable the grader's checkers receive instead of the student's object.
Each call writes the arguments to a request file, runs one cell of the grader's own in the kernel (see
``course_lib.course.channel``), reads the answer with ``torch.load(weights_only=True)`` and rebuilds the
result from plain data only: tensors, numbers, strings, lists, dicts, and ``course_lib`` dataclasses such
as ``Episode``; anything else comes back as an :class:`Opaque` stand-in that fails the checker's tests.
In-place changes the function made to its arguments are copied back, so "you changed the input" checks
still work; the global RNG state and the grad mode travel both ways. A result that requires grad is tied
to the arguments through :class:`_RemoteGraph`, whose backward pass asks the kernel for the
vector-Jacobian product of the student's own graph.

So the verdict is always computed here, by the checker module the grader imported before any student
code ran: patching ``checks`` in the kernel, exception hooks, input transformers or printed scores change
nothing; a function that makes the kernel ignore the grader's cell gives no answer and fails.
"""
from __future__ import annotations

import asyncio
import dataclasses
import importlib
import secrets
import sys
from pathlib import Path

import torch
from nbclient import NotebookClient

from . import channel
from .channel import tensors_requiring_grad
from .checks.base import CheckTimeout
from .nbexec import DEAD_KERNEL_ERROR, TIMEOUT_ERROR, run_extra_cell


# Read when the grader starts, before any student code runs: the kernel gets this text, not the file on disk.
CHANNEL_SOURCE = Path(channel.__file__).read_text(encoding="utf-8")
MAX_ANSWER_BYTES = 256 * 2 ** 20


class StudentCodeError(AssertionError):
    """The student's function raised, or gave no usable answer; the message says which."""


class KernelGone(StudentCodeError):
    """The kernel died (or was stopped) during a call: no further call can be answered."""


class Opaque:
    """A result the channel does not rebuild (an arbitrary object): it has its type's name and repr only."""

    def __init__(self, type_name: str, text: str) -> None:
        self.type_name, self.text = type_name, text

    def __repr__(self) -> str:
        return self.text


def _opaque(type_name: str, text: str) -> Opaque:
    # A class of the same name, so that messages like "got NoneType" or "got MyEpisode" stay right.
    return type(str(type_name), (Opaque,), {})(type_name, text)


def _for_sending(obj, memo: dict[int, object]):
    """A copy of the arguments that can be pickled: non-leaf tensors that require grad become leaves."""
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, torch.Tensor) and obj.requires_grad and obj.grad_fn is not None:
        sent = obj.detach().requires_grad_()
    elif isinstance(obj, list):
        sent = [_for_sending(item, memo) for item in obj]
    elif isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        sent = tuple(_for_sending(item, memo) for item in obj)
    elif isinstance(obj, dict):
        sent = {key: _for_sending(value, memo) for key, value in obj.items()}
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        sent = dataclasses.replace(obj, **{f.name: _for_sending(getattr(obj, f.name), memo)
                                           for f in dataclasses.fields(obj) if f.init})
    else:
        sent = obj
    memo[id(obj)] = sent
    return sent


def _course_dataclass(name: str):
    """The ``course_lib`` dataclass named ``name`` if it is one (already imported), else None."""
    module_name, _, qualname = name.rpartition(".")
    if not module_name.startswith("course_lib.") or module_name not in sys.modules:
        return None
    cls = getattr(importlib.import_module(module_name), qualname, None)
    return cls if isinstance(cls, type) and dataclasses.is_dataclass(cls) else None


def _at(root, path: list):
    for step in path:
        root = list(root.values())[step] if isinstance(root, dict) else (
            getattr(root, step) if isinstance(step, str) else root[step])
    return root


class _Decoder:
    """Rebuilds a result from the kernel's plain data, checking every field; tensors come from ``tensors``."""

    def __init__(self, arguments, tensors: list[torch.Tensor]) -> None:
        self.arguments, self.tensors = arguments, iter(tensors)

    def __call__(self, data):
        if data is None or isinstance(data, (bool, int, float, str)):
            return data
        if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
            raise StudentCodeError(f"the answer holds a {type(data).__name__} the grader does not read")
        kind = data["kind"]
        if kind == "tensor" and isinstance(data.get("value"), torch.Tensor):
            return next(self.tensors)
        if kind == "argument":
            return _at(self.arguments, data["path"])
        if kind in ("list", "tuple"):
            items = [self(item) for item in data["items"]]
            return items if kind == "list" else tuple(items)
        if kind == "dict":
            return {self(key): self(value) for key, value in data["items"]}
        if kind == "dataclass":
            cls = _course_dataclass(str(data["type"]))
            fields = {name: self(value) for name, value in data["fields"].items()}
            if cls is None:
                return _opaque(str(data["type"]).rpartition(".")[2], f"<{data['type']}>")
            return cls(**fields)
        if kind == "generator":
            return torch.Generator().set_state(data["state"])
        if kind in ("module", "opaque"):
            return _opaque(str(data["type"]), str(data.get("repr", f"<{data['type']}>")))
        raise StudentCodeError(f"the answer holds an unknown kind {kind!r}")


def _result_tensors(data, found: list) -> list[tuple[torch.Tensor, bool]]:
    """The (value, requires_grad) of every tensor in the answer, in the order the decoder meets them."""
    if isinstance(data, dict) and data.get("kind") == "tensor":
        found.append((data["value"], bool(data.get("requires_grad"))))
    elif isinstance(data, dict) and data.get("kind") in ("list", "tuple"):
        for item in data["items"]:
            _result_tensors(item, found)
    elif isinstance(data, dict) and data.get("kind") == "dict":
        for key, value in data["items"]:
            _result_tensors(key, found)
            _result_tensors(value, found)
    elif isinstance(data, dict) and data.get("kind") == "dataclass":
        for value in data["fields"].values():
            _result_tensors(value, found)
    return found


def _write_back(original, data) -> None:
    """Copy into the grader's argument ``original`` the changes the student's function made to its copy."""
    if not isinstance(data, dict):
        return
    kind = data.get("kind")
    if isinstance(original, torch.Tensor) and kind == "tensor":
        value = data["value"]
        if value.shape == original.shape and value.dtype == original.dtype:
            if not torch.equal(value, original.detach()):
                with torch.no_grad():
                    original.copy_(value)
    elif isinstance(original, (list, tuple)) and kind in ("list", "tuple"):
        if isinstance(original, list) and len(original) != len(data["items"]):
            original[:] = [_Decoder(None, [v for v, _ in _result_tensors(item, [])])(item) for item in data["items"]]
            return
        for item, item_data in zip(original, data["items"]):
            _write_back(item, item_data)
    elif isinstance(original, dict) and kind == "dict":
        if len(original) != len(data["items"]):
            return
        for value, (_, value_data) in zip(original.values(), data["items"]):
            _write_back(value, value_data)
    elif dataclasses.is_dataclass(original) and kind == "dataclass":
        for field in dataclasses.fields(original):
            if field.name in data["fields"]:
                _write_back(getattr(original, field.name), data["fields"][field.name])
    elif isinstance(original, torch.Generator) and kind == "generator":
        original.set_state(data["state"])
    elif isinstance(original, torch.nn.Module) and kind == "module":
        named = dict(original.named_parameters())
        named.update(original.named_buffers())
        for name, tensor_data in data["tensors"].items():
            if name in named:
                _write_back(named[name], tensor_data)


class _RemoteGraph(torch.autograd.Function):
    """Ties a remote result's tensors to the arguments that require grad; backward asks the kernel."""

    @staticmethod
    def forward(ctx, vjp, values, *inputs):
        ctx.vjp = vjp
        return tuple(value.clone() for value in values)

    @staticmethod
    def backward(ctx, *grads):
        return (None, None, *ctx.vjp(list(grads)))


class StudentKernel:
    """The kernel a student's notebook ran in, seen through the grader's channel.

    Args:
        client: the notebook client whose kernel holds the student's definitions.
        loop: the event loop that client runs on (calls come from the checkers' thread).
        folder: a folder for request and answer files, that the kernel can read and write.
        timeout: seconds one call may run before the kernel is interrupted (a failed check).
    """

    def __init__(self, client: NotebookClient, loop: asyncio.AbstractEventLoop, folder: Path,
                 timeout: int) -> None:
        self.client, self.loop, self.folder, self.timeout = client, loop, folder, timeout
        self.calls = 0
        self.alive = True
        self.ready = False

    def function(self, name: str) -> RemoteFunction:
        return RemoteFunction(self, name)

    def _run(self, source: str):
        """Run one cell of the grader's in the kernel (from the checkers' thread); return it with its outputs."""
        return asyncio.run_coroutine_threadsafe(run_extra_cell(self.client, source, self.timeout), self.loop).result()

    def _exchange(self, request: dict, what: str) -> dict:
        """Send ``request``, run the grader's cell, return the answer (plain data, read safely)."""
        if not self.alive:
            raise KernelGone(f"{what} was not called: the kernel died earlier")
        if not self.ready:  # the channel's code, as the grader read it at start
            self._run(f"import types as _course_types; _course_channel = _course_types.ModuleType('course_channel'); "
                      f"exec(compile({CHANNEL_SOURCE!r}, '<course grader channel>', 'exec'), _course_channel.__dict__)")
            self.ready = True
        token = secrets.token_hex(8)
        request_path, answer_path = self.folder / f"{token}.request", self.folder / f"{token}.answer"
        torch.save(request, request_path)
        cell = self._run(f"_course_channel.serve(globals(), {str(request_path)!r}, {str(answer_path)!r})")
        errors = {out.get("ename") for out in cell.outputs if out.output_type == "error"}
        if TIMEOUT_ERROR in errors:
            if not self.client.km.has_kernel:
                self.alive = False
            raise CheckTimeout(f"{what} took longer than {self.timeout} s: look for an endless loop "
                               "or work that grows with the dataset instead of the episode")
        if DEAD_KERNEL_ERROR in errors:
            self.alive = False
            raise KernelGone(f"the kernel died while running {what}")
        try:
            if answer_path.stat().st_size > MAX_ANSWER_BYTES:
                raise StudentCodeError(f"{what} returned more than {MAX_ANSWER_BYTES // 2 ** 20} MB")
            answer = torch.load(answer_path, weights_only=True)
        except StudentCodeError:
            raise
        except FileNotFoundError:
            raise StudentCodeError(f"{what} gave no answer: the grader's call never ran (does the notebook "
                                   "change how the kernel runs code?)") from None
        except Exception as error:
            raise StudentCodeError(f"{what} gave an answer the grader cannot read ({type(error).__name__})") from None
        finally:
            request_path.unlink(missing_ok=True)
        answer_path.unlink(missing_ok=True)
        if not isinstance(answer, dict):
            raise StudentCodeError(f"{what} gave an answer the grader cannot read")
        if isinstance(answer.get("rng"), torch.Tensor):
            torch.set_rng_state(answer["rng"])
        error = answer.get("error")
        if error is not None:
            ename, evalue = str(error.get("ename")), str(error.get("evalue"))
            raise StudentCodeError(f"{ename}: {evalue}" if evalue else ename)
        return answer

    def call(self, name: str, args: tuple, kwargs: dict):
        """``name(*args, **kwargs)`` in the kernel; the result rebuilt here (see the module docstring)."""
        self.calls += 1
        call_id = self.calls
        sent_args, sent_kwargs = _for_sending((args, kwargs), {})
        request = {"op": "call", "call": call_id, "name": name, "args": sent_args, "kwargs": sent_kwargs,
                   "grad": torch.is_grad_enabled(), "rng": torch.get_rng_state()}
        answer = self._exchange(request, name)
        _write_back((args, kwargs), answer.get("after"))
        data = answer.get("result")
        tensors = _result_tensors(data, [])
        if not all(isinstance(value, torch.Tensor) for value, _ in tensors):
            raise StudentCodeError(f"{name} gave an answer the grader cannot read")
        grad_inputs = tensors_requiring_grad((args, kwargs))
        wanted = [index for index, (_, requires_grad) in enumerate(tensors) if requires_grad]
        values = [value for value, _ in tensors]
        if wanted and grad_inputs:
            def vjp(grads: list[torch.Tensor]) -> list:
                answer = self._exchange({"op": "vjp", "call": call_id, "grads": [g.detach() for g in grads]},
                                        f"the gradient through {name}")
                received = answer.get("grads", [])
                if len(received) != len(grad_inputs):
                    raise StudentCodeError(f"the gradient through {name} could not be read")
                return [None if g is None else g.to(x.dtype).reshape(x.shape) for g, x in zip(received, grad_inputs)]
            linked = _RemoteGraph.apply(vjp, [values[i] for i in wanted], *grad_inputs)
            for index, tensor in zip(wanted, linked):
                values[index] = tensor
        else:
            for index in wanted:
                values[index] = values[index].requires_grad_()
        return _Decoder((args, kwargs), values)(data)


class RemoteFunction:
    """The student's function ``name``, called in their kernel; what a checker receives."""

    def __init__(self, kernel: StudentKernel, name: str) -> None:
        self.kernel, self.__name__ = kernel, name

    def __call__(self, *args, **kwargs):
        return self.kernel.call(self.__name__, args, kwargs)

    def __repr__(self) -> str:
        return f"<the student's {self.__name__}>"
