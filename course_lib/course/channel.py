"""The kernel's end of the grader's channel: call a student's function on the grader's inputs, write the answer.

After a student's notebook has run, the grader (``course_lib.course.remote``) defines this module in the
student's kernel from the text it read at start (not from the file, which student code could have changed),
then runs cells of its own there, each one line::

    _course_channel.serve(globals(), "REQUEST", "ANSWER")

``REQUEST`` is a file the grader wrote (``torch.save`` of the function's name and its arguments, the grad mode
and the global RNG state); :func:`serve` calls the function and writes to ``ANSWER``, a path only that cell
names, the result and the arguments after the call (so the grader sees in-place changes) as *plain data*:
tensors, numbers, strings and tagged dicts and lists (:func:`encode`), which the grader reads with
``torch.load(weights_only=True)`` and checks field by field. Nothing here decides a verdict: the kernel
only reports what the student's function returned, and the grader compares it with its own reference.

Gradients: the tensors of a call that require grad stay in the kernel (:data:`GRAPHS`); when the grader
back-propagates through a result, it sends a ``vjp`` request and :func:`serve` answers with
``torch.autograd.grad`` of the student's own graph, so a detached or first-order update shows as such.
"""
from __future__ import annotations

import dataclasses
import itertools

import torch

GRAPHS: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}  # call id -> (outputs, inputs)
MAX_DEPTH = 40


def tensors_requiring_grad(obj, found: dict[int, torch.Tensor] | None = None) -> list[torch.Tensor]:
    """The distinct tensors that require grad inside ``obj`` (containers, dataclasses, modules), in order.

    The grader and the kernel walk their copies of the same arguments with this function, so the i-th
    tensor on one side is the i-th on the other.
    """
    found = {} if found is None else found
    if isinstance(obj, torch.Tensor):
        if obj.requires_grad:
            found.setdefault(id(obj), obj)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            tensors_requiring_grad(item, found)
    elif isinstance(obj, dict):
        for item in obj.values():
            tensors_requiring_grad(item, found)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for field in dataclasses.fields(obj):
            tensors_requiring_grad(getattr(obj, field.name), found)
    elif isinstance(obj, torch.nn.Module):
        for tensor in itertools.chain(obj.parameters(), obj.buffers()):
            tensors_requiring_grad(tensor, found)
    return list(found.values())


def _paths(obj, path: tuple, table: dict[int, list], depth: int = 0) -> None:
    """Record the path of every object inside the arguments, so a result that *is* an argument says so."""
    if depth > MAX_DEPTH or id(obj) in table or isinstance(obj, (int, float, str, bool, type(None))):
        return
    table[id(obj)] = list(path)
    if isinstance(obj, (list, tuple)):
        for index, item in enumerate(obj):
            _paths(item, (*path, index), table, depth + 1)
    elif isinstance(obj, dict):
        for index, item in enumerate(obj.values()):
            _paths(item, (*path, index), table, depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for field in dataclasses.fields(obj):
            _paths(getattr(obj, field.name), (*path, field.name), table, depth + 1)


def encode(obj, refs: dict[int, list] | None = None, grad_outputs: list | None = None, depth: int = 0):
    """``obj`` as plain data (see the module docstring); objects found in ``refs`` become references,
    and tensors that require grad are appended to ``grad_outputs``."""
    refs = refs or {}
    if id(obj) in refs:
        return {"kind": "argument", "path": refs[id(obj)]}
    if obj is None or isinstance(obj, (bool, str)):
        return obj if not isinstance(obj, str) else str(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if depth > MAX_DEPTH:
        return {"kind": "opaque", "type": type(obj).__name__, "repr": "(nested too deeply)"}
    if isinstance(obj, torch.Tensor):
        if obj.requires_grad and grad_outputs is not None:
            grad_outputs.append(obj)
        return {"kind": "tensor", "value": obj.detach().as_subclass(torch.Tensor).to("cpu", copy=True),
                "requires_grad": bool(obj.requires_grad)}
    if isinstance(obj, (list, tuple)):
        return {"kind": "tuple" if isinstance(obj, tuple) else "list",
                "items": [encode(item, refs, grad_outputs, depth + 1) for item in obj]}
    if isinstance(obj, dict):
        return {"kind": "dict", "items": [[encode(key, refs, None, depth + 1), encode(value, refs, grad_outputs, depth + 1)]
                                          for key, value in obj.items()]}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"kind": "dataclass", "type": f"{type(obj).__module__}.{type(obj).__qualname__}",
                "fields": {field.name: encode(getattr(obj, field.name), refs, grad_outputs, depth + 1)
                           for field in dataclasses.fields(obj)}}
    if isinstance(obj, torch.Generator):
        return {"kind": "generator", "state": obj.get_state()}
    if isinstance(obj, torch.nn.Module):
        named = itertools.chain(obj.named_parameters(), obj.named_buffers())
        return {"kind": "module", "type": type(obj).__name__,
                "tensors": {name: encode(tensor, None, None, depth + 1) for name, tensor in named}}
    try:
        text = repr(obj)[:300]
    except Exception:  # a student's object whose repr fails still gets reported
        text = "(no repr)"
    return {"kind": "opaque", "type": type(obj).__name__, "repr": text}


def _error(error: BaseException) -> dict:
    try:
        message = str(error)
    except Exception:
        message = "(the error's message could not be read)"
    return {"ename": type(error).__name__, "evalue": message}


def _call(namespace: dict, request: dict) -> dict:
    args, kwargs = request["args"], request["kwargs"]
    function = namespace.get(request["name"])
    if function is None:
        return {"error": {"ename": "NameError", "evalue": f"name {request['name']!r} is not defined"}}
    torch.set_rng_state(request["rng"])
    grad_inputs = tensors_requiring_grad((args, kwargs))
    try:
        with torch.set_grad_enabled(request["grad"]):
            result = function(*args, **kwargs)
    except BaseException as error:  # the student's function may raise anything, SystemExit included
        return {"error": _error(error), "rng": torch.get_rng_state()}
    refs: dict[int, list] = {}
    _paths((args, kwargs), (), refs)
    outputs: list[torch.Tensor] = []
    answer = {"result": encode(result, refs, outputs), "after": encode((args, kwargs)), "rng": torch.get_rng_state()}
    if outputs:
        GRAPHS[request["call"]] = (outputs, grad_inputs)
    return answer


def _vjp(request: dict) -> dict:
    outputs, inputs = GRAPHS[request["call"]]
    pairs = [(out, grad) for out, grad in zip(outputs, request["grads"]) if grad is not None]
    if not pairs or not inputs:
        return {"grads": [None] * len(inputs)}
    grads = torch.autograd.grad([out for out, _ in pairs], inputs, [grad for _, grad in pairs],
                                allow_unused=True, retain_graph=True)
    return {"grads": [None if g is None else g.detach().as_subclass(torch.Tensor).clone() for g in grads]}


def serve(namespace: dict, request_path: str, answer_path: str) -> None:
    """Answer the grader's request in ``request_path`` (a call or a vjp) into ``answer_path``."""
    request = torch.load(request_path, weights_only=False)  # written by the grader, for this kernel
    try:
        answer = _call(namespace, request) if request["op"] == "call" else _vjp(request)
    except BaseException as error:  # e.g. a result whose encoding fails: report it, do not crash the cell
        answer = {"error": _error(error)}
    torch.save(answer, answer_path)
