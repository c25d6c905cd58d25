"""The backend seam: the one place that knows NumPy from CuPy.

Everything else takes an array module ``xp`` (the ``cupy.get_array_module`` convention).
CuPy is imported lazily and only when a CuPy array or ``device="cuda"``/``"auto"`` asks for it,
so ``import cumel`` works, and prints nothing, on a machine without CuPy, a driver or a GPU.
"""
from __future__ import annotations

import contextlib
import functools

import numpy as np

DEVICES = (None, "cpu", "cuda", "auto")


@functools.lru_cache(maxsize=1)
def _cupy_or_none():
    try:
        import cupy
    except Exception:  # not installed, or installed without a usable CUDA runtime
        return None
    return cupy


@functools.lru_cache(maxsize=1)
def gpu_available():
    """True when CuPy imports and at least one CUDA device answers."""
    cupy = _cupy_or_none()
    if cupy is None:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def cupy_module():
    """CuPy, or a clear error saying why it cannot be used."""
    cupy = _cupy_or_none()
    if cupy is None:
        raise RuntimeError("device='cuda' needs CuPy: pip install 'cumel[cuda13]' (or cuda12)")
    if not gpu_available():
        raise RuntimeError("device='cuda' was asked for, but no CUDA device is usable "
                           "(CuPy found no GPU or no driver)")
    return cupy


def is_cupy_array(x):
    cupy = _cupy_or_none()
    return cupy is not None and isinstance(x, cupy.ndarray)


def get_array_module(x):
    """``cupy`` for CuPy arrays, ``numpy`` for everything else."""
    return _cupy_or_none() if is_cupy_array(x) else np


def device_id(xp):
    """Identity of the device ``xp`` computes on: None for NumPy, the CUDA device id for CuPy.
    Keys the per-device caches (plans, kernels, starts)."""
    return None if xp is np else xp.cuda.Device().id


def check_device(device):
    if isinstance(device, str):
        device = device.lower()
    if device not in DEVICES:
        raise ValueError(f"device must be None, 'cpu', 'cuda' or 'auto', got {device!r}")
    return device


def wants_gpu(x, device):
    """True when a NumPy (host) input is to be solved on a CUDA device: ``device="cuda"``, or
    ``"auto"`` with a GPU usable. Raises the clear error of :func:`cupy_module` for "cuda"
    without one."""
    device = check_device(device)
    if is_cupy_array(x):
        return False
    if device == "cuda" or (device == "auto" and gpu_available()):
        cupy_module()
        return True
    return False


def select(x, device):
    """Decide where to compute.

    Returns ``(xp, x_on_xp, to_caller)``: a CuPy input runs on its own device; a NumPy input
    runs on the CPU unless ``device`` is "cuda" (or "auto" with a GPU present), and the result
    goes back to NumPy through ``to_caller``.
    """
    device = check_device(device)
    if is_cupy_array(x):
        if device == "cpu":
            return np, x.get(), _cupy_or_none().asarray
        return _cupy_or_none(), x, _identity
    if device == "cuda" or (device == "auto" and gpu_available()):
        cupy = cupy_module()
        return cupy, cupy.asarray(x), _to_numpy
    return np, np.asarray(x), _identity


def _identity(a):
    return a


# -- torch and other DLPack producers ------------------------------------------------------------

def is_torch_tensor(x):
    """True for a ``torch.Tensor`` (or subclass), decided without importing torch: torch stays an
    optional dependency that only a torch input brings in."""
    return any(cls.__module__.split(".", 1)[0] == "torch" and cls.__name__ == "Tensor"
               for cls in type(x).__mro__)


def requires_grad(x):
    """True for a torch tensor that requires grad while torch records gradients (outside
    ``torch.no_grad()`` and inside no custom op's implementation): a result computed from it is
    expected to carry a gradient."""
    if not is_torch_tensor(x) or not x.requires_grad:
        return False
    import torch
    return torch.is_grad_enabled()


class NoGradientError(RuntimeError):
    """A torch tensor that requires grad was given to a computation that has no gradient.

    cumel never detaches such a tensor silently: the message names the parameter, why there is
    no gradient, and what to use instead. The inverses that have a gradient (``solver="nnls"``
    and ``"lstsq"``, :mod:`cumel.torch`) never raise it; under ``torch.no_grad()`` nothing does.

    Examples
    --------
    >>> import torch, cumel
    >>> spec = torch.rand(201, 8, requires_grad=True)
    >>> try:
    ...     cumel.GriffinLim(n_fft=400)(spec)
    ... except cumel.NoGradientError as exc:
    ...     print(str(exc).split(";")[0])
    specgram requires grad, but cumel.GriffinLim has no gradient
    >>> with torch.no_grad():
    ...     cumel.GriffinLim(n_fft=400, n_iter=1)(spec).shape
    torch.Size([700])
    """


def no_gradient(name, what, instead=None):
    """The :class:`NoGradientError` for parameter ``name`` given to ``what``."""
    text = (f"{name} requires grad, but {what} has no gradient; pass {name}.detach() (or call it "
            f"under torch.no_grad()) for the values alone")
    return NoGradientError(text + (f", or use {instead}" if instead else ""))


def _plain_tensor(t, name):
    """The tensor without autograd history, as a plain strided tensor, or a clear error."""
    t = t.detach()
    if str(t.layout) != "torch.strided":
        raise TypeError(f"{name} must be a dense (strided) torch tensor, got layout {t.layout}")
    if t.is_complex() or str(t.dtype) == "torch.bfloat16":
        raise TypeError(f"{name} must hold real numbers NumPy can represent, got {t.dtype}")
    return t.resolve_conj().resolve_neg()


@contextlib.contextmanager
def foreign_scope(x, name="mel", what=None, instead=None):
    """Present a torch tensor or a CPU DLPack producer as NumPy/CuPy, and hand results back.

    Yields ``(array, back)``: ``array`` is ``x`` as a NumPy or CuPy array sharing its memory (no
    copy), ``back(result)`` turns a result array into the caller's type on the caller's device.

    * torch CPU tensor: ``Tensor.numpy()`` in, ``torch.from_numpy`` out.
    * torch CUDA tensor: DLPack into CuPy on the tensor's device; the work inside the scope runs
      on torch's current stream of that device (wrapped in ``cupy.cuda.ExternalStream``), so it is
      ordered with the caller's torch work without a host synchronisation; the result goes back
      through DLPack (``torch.from_dlpack``), again without a copy.
    * any other object with ``__dlpack__`` on the CPU: ``np.from_dlpack``; results are NumPy.
    * NumPy, CuPy and array-likes: unchanged, inside ``with x.device`` for a CuPy array, so the
      work, the output and the per-device caches are on the input's device.

    ``name`` is the parameter the error messages name. A tensor that requires grad (while torch
    records gradients) raises :class:`NoGradientError` naming ``what`` (the computation, which
    has no gradient) and ``instead`` (the alternative that has one), never a silent detach.
    """
    if requires_grad(x):
        raise no_gradient(name, what or "this cumel function", instead)
    if is_torch_tensor(x):
        import torch
        t = _plain_tensor(x, name)
        if t.device.type == "cpu":
            yield t.numpy(), _to_torch_cpu
            return
        if t.device.type != "cuda":
            raise ValueError(f"{name} must be a CPU or CUDA torch tensor, got device {t.device}")
        cupy = cupy_module()
        with torch.cuda.device(t.device), cupy.cuda.Device(t.device.index):
            stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(t.device).cuda_stream)
            with stream:
                yield cupy.from_dlpack(t), _to_torch_dlpack
        return
    if is_cupy_array(x):
        with x.device:
            yield x, _identity
        return
    if (not isinstance(x, np.ndarray) and hasattr(x, "__dlpack__")
            and hasattr(x, "__dlpack_device__")):
        device_type = x.__dlpack_device__()[0]
        if int(device_type) != 1:   # kDLCPU
            raise ValueError(f"{name}: a DLPack producer on device type {int(device_type)} is not "
                             "supported; pass a CuPy array or a torch tensor (or copy to the CPU)")
        yield np.from_dlpack(x), _identity
        return
    yield x, _identity


def _to_torch_cpu(a):
    import torch
    return torch.from_numpy(a)      # shares the result's memory


def _to_torch_dlpack(a):
    import torch
    return torch.from_dlpack(a)


def out_view(out, xp):
    """An ``xp`` array sharing memory with the caller's ``out``.

    Parameters
    ----------
    out : numpy.ndarray, cupy.ndarray or torch.Tensor
        Where the caller wants the result. A torch CPU tensor maps to NumPy, a torch CUDA tensor
        to CuPy (DLPack, no copy).
    xp : module
        ``numpy`` for results computed (or delivered) on the host, ``cupy`` for device results.

    Returns
    -------
    array of ``xp``, writing into which writes into ``out``.

    Raises
    ------
    ValueError
        Naming ``out``, when it is of another kind or place than the result, or read-only.
    """
    if is_torch_tensor(out):
        if out.requires_grad:
            raise ValueError("out must not require grad (cumel writes into it in place), "
                             "got a tensor with requires_grad=True")
        t = _plain_tensor(out, "out")
        if t.device.type == "cpu" and xp is np:
            return t.numpy()
        if t.device.type == "cuda" and xp is not np:
            if t.device.index != device_id(xp):
                raise ValueError(f"out is on {t.device}, the result on cuda:{device_id(xp)}")
            return xp.from_dlpack(t)
        where = "the host" if xp is np else "a CUDA device"
        raise ValueError(f"out is a torch tensor on {t.device}, but the result is on {where}")
    if xp is np:
        if not isinstance(out, np.ndarray):
            raise ValueError(f"out must be a numpy.ndarray (or torch CPU tensor) for a result "
                             f"on the host, got {type(out).__module__}.{type(out).__name__}")
        if not out.flags.writeable:
            raise ValueError("out must be writeable, got a read-only numpy.ndarray")
        return out
    if not isinstance(out, xp.ndarray):
        raise ValueError(f"out must be a cupy.ndarray (or torch CUDA tensor) for a result on "
                         f"a CUDA device, got {type(out).__module__}.{type(out).__name__}")
    if out.device.id != device_id(xp):
        raise ValueError(f"out is on cuda:{out.device.id}, the result on cuda:{device_id(xp)}")
    return out


def _to_numpy(a):
    return a.get()


def to_numpy(a):
    """Host copy of a NumPy or CuPy array."""
    return a.get() if is_cupy_array(a) else np.asarray(a)
