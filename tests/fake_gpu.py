"""A CPU stand-in for CUDA that enforces CUDA's device rules, so CPU tests catch GPU-only bugs.

`FakeGpuTensor` is a CPU tensor that reports `device == cuda:0` and `is_cuda == True` and refuses
what a real CUDA tensor refuses: mixing with a non-scalar CPU tensor in one op ("Expected all
tensors to be on the same device"), indexing a CPU tensor with it ("indices should be either on
cpu or on the same device as the indexed tensor (cpu)") and `.numpy()` without `.cpu()`. Inside
`fake_gpu()`, factories asked for a CUDA device (`torch.arange(n, device=x.device)`) make fake
GPU tensors and mmcv's compiled ops return their outputs on their inputs' fake device, as on a GPU.

A factory *without* a device makes a plain CPU tensor here, exactly as on a GPU machine: that is
the class of torch-2 bugs (mmrotate's `multiclass_nms_rotated` labels) this module exists to catch.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

CUDA = torch.device("cuda", 0)
_SAME_DEVICE = "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!"
_CPU_INDEXED = "indices should be either on cpu or on the same device as the indexed tensor (cpu)"
# Calls that legally take tensors from both devices (device moves, copies).
_MOVES = {torch.Tensor.to, torch.Tensor.type_as, torch.Tensor.copy_, torch.Tensor.new_tensor}
_SHAPE_ONLY = (torch.Tensor.expand_as, torch.Tensor.view_as, torch.Tensor.reshape_as)  # read `other`'s size only
_DEVICE_MOVES = (torch.Tensor.cpu, torch.Tensor.cuda, torch.Tensor.to, torch.Tensor.type_as)


def _plain(t: torch.Tensor) -> torch.Tensor:
    with torch._C.DisableTorchFunctionSubclass():
        return t.as_subclass(torch.Tensor)


def to_fake_gpu(value: Any) -> Any:
    """Tensors (any nesting) and nn.Modules (parameters and buffers, in place) moved to the fake GPU."""
    if isinstance(value, torch.nn.Module):
        for module in value.modules():
            for name, param in list(module._parameters.items()):
                if param is not None and not isinstance(param, FakeGpuTensor):
                    module._parameters[name] = torch.nn.Parameter(
                        _plain(param.data).as_subclass(FakeGpuTensor), requires_grad=param.requires_grad
                    )
            for name, buf in list(module._buffers.items()):
                if buf is not None and not isinstance(buf, FakeGpuTensor):
                    module._buffers[name] = buf.as_subclass(FakeGpuTensor)
        teacher = value.__dict__.get("teacher_model")  # kept outside the module tree on purpose
        if teacher is not None:
            to_fake_gpu(teacher)
        return value
    return tree_map(lambda t: t.as_subclass(FakeGpuTensor) if type(t) is torch.Tensor else t, value)


def on_fake_gpu(t: Any) -> bool:
    return isinstance(t, FakeGpuTensor)


def _tensors(args: Any, kwargs: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]


def _check_devices(func: Any, args: tuple, kwargs: dict) -> None:
    if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__, torch.Tensor.index_select):
        target, index = args[0], args[1:]
        if not on_fake_gpu(target) and any(on_fake_gpu(t) for t in _tensors(index, kwargs)):
            raise RuntimeError(_CPU_INDEXED)
        if func is torch.Tensor.__setitem__ and on_fake_gpu(target):
            value = args[2] if len(args) > 2 else None
            if isinstance(value, torch.Tensor) and not on_fake_gpu(value) and value.dim() > 0:
                raise RuntimeError(_SAME_DEVICE)
        return
    tensors = _tensors(args, kwargs)
    if any(on_fake_gpu(t) for t in tensors) and any(not on_fake_gpu(t) and t.dim() > 0 for t in tensors):
        raise RuntimeError(_SAME_DEVICE)


def _wants_gpu(device: Any) -> bool:
    if isinstance(device, int):
        return True
    return device is not None and torch.device(device).type == "cuda"


def _move(func: Any, args: tuple, kwargs: dict) -> Any:
    """`.to(...)`/`.cuda()`/`.cpu()`/`.type_as(...)`: the result's fake device follows the target."""
    self = _plain(args[0])
    if func is torch.Tensor.cpu:
        return self.clone() if kwargs.get("memory_format") is None else self
    if func is torch.Tensor.cuda:
        return self.as_subclass(FakeGpuTensor)
    if func is torch.Tensor.type_as:
        out = self.type(args[1].dtype)
        return out.as_subclass(FakeGpuTensor) if on_fake_gpu(args[1]) else out
    # Tensor.to(device | dtype | tensor, ...)
    target = kwargs.get("device")
    rest = [a for a in args[1:]]
    for a in rest:
        if isinstance(a, torch.Tensor):
            target = CUDA if on_fake_gpu(a) else torch.device("cpu")
        elif isinstance(a, (str, torch.device, int)) and not isinstance(a, bool):
            target = a
    plain_args = [(_plain(a) if isinstance(a, torch.Tensor) else a) for a in rest]
    plain_args = [("cpu" if isinstance(a, (str, torch.device, int)) and not isinstance(a, bool) else a)
                  for a in plain_args]
    kw = {k: ("cpu" if k == "device" else v) for k, v in kwargs.items()}
    out = self.to(*plain_args, **kw)
    gpu = _wants_gpu(target) if target is not None else on_fake_gpu(args[0])
    return out.as_subclass(FakeGpuTensor) if gpu else _plain(out)


class FakeGpuTensor(torch.Tensor):
    """A CPU tensor that behaves, device-wise, like one on cuda:0."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func == torch.Tensor.device.__get__:
            return CUDA
        if func == torch.Tensor.is_cuda.__get__:
            return True
        if func is torch.Tensor.get_device:
            return 0
        if func in (torch.Tensor.numpy, torch.Tensor.__array__):
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the "
                            "tensor to host memory first.")
        if func in _DEVICE_MOVES:
            return _move(func, args, kwargs)
        if func in _SHAPE_ONLY:
            out = func(_plain(args[0]), _plain(args[1]))
            return out.as_subclass(FakeGpuTensor) if on_fake_gpu(args[0]) else out
        if func not in _MOVES:
            _check_devices(func, args, kwargs)
        return super().__torch_function__(func, types, args, kwargs)


class _FactoryMode(TorchFunctionMode):
    """Factories asked for a CUDA device build a fake GPU tensor (on the CPU)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _DEVICE_MOVES:
            return _move(func, args, kwargs)
        if "device" in kwargs and _wants_gpu(kwargs["device"]):
            kwargs["device"] = "cpu"
            out = func(*args, **kwargs)
            return tree_map(lambda t: t.as_subclass(FakeGpuTensor) if isinstance(t, torch.Tensor) else t, out)
        return func(*args, **kwargs)


class _ExtProxy:
    """mmcv's compiled `_ext` module: outputs of an op land on its inputs' (fake) device."""

    def __init__(self, ext: Any) -> None:
        self._ext = ext

    def __getattr__(self, name: str) -> Any:
        op = getattr(self._ext, name)

        def call(*args, **kwargs):
            gpu = any(on_fake_gpu(t) for t in _tensors(args, kwargs))
            out = op(*[tree_map(_plain_if_tensor, a) for a in args],
                     **{k: tree_map(_plain_if_tensor, v) for k, v in kwargs.items()})
            return to_fake_gpu(out) if gpu else out

        return call


def _plain_if_tensor(t: Any) -> Any:
    return _plain(t) if isinstance(t, torch.Tensor) else t


@contextlib.contextmanager
def fake_gpu() -> Iterator[None]:
    """CUDA device rules on the CPU for the code run inside (see the module docstring)."""
    patched = []
    for name, module in list(sys.modules.items()):
        if name.startswith("mmcv.ops") and module is not None and hasattr(module, "ext_module"):
            patched.append((module, module.ext_module))
            module.ext_module = _ExtProxy(module.ext_module)
    try:
        with _FactoryMode():
            yield
    finally:
        for module, ext in patched:
            module.ext_module = ext
