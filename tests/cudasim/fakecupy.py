"""A stand-in for the ``cupy`` module whose "device" is host memory and whose kernels run on the
CPU emulator (``compiler.py`` + ``include/``), so ``cumel.cuda`` runs unmodified in CI.

Strict where CuPy is strict (that is the point of it):

* :class:`ndarray` wraps a NumPy array ("device memory") but is not a NumPy array:
  ``np.asarray(fake)`` raises TypeError, and mixing a fake array with a non-scalar NumPy array in
  any operation raises TypeError, as CuPy does. ``.get()`` / ``asnumpy`` copy to the host.
* Kernel launches check every argument against the C++ parameter type of the kernel
  (``numpy.int32`` for ``int``, ``numpy.int64`` for ``long long``, float32/float64 scalars,
  device arrays of exactly the pointee dtype for pointers, Python numbers rejected), the launch
  configuration (block size, grid, dynamic shared memory and its opt-in, cooperative grid size
  against occupancy) and the device every array lives on.

The device describes itself with made-up H100-like figures (``getDeviceProperties`` with the
fields CuPy 14 reports under CUDA 13, ``deviceGetAttribute``, ``Device.attributes``), and CUDA
events time on the host clock (launches are synchronous), with ``get_elapsed_time`` as strict as
``cudaEventElapsedTime`` about unrecorded and non-timing events.

Settings live on :data:`sim` (also ``cupy.cudasim``): device count, SM count, memory figures, an
allocation hook (raise ``OutOfMemoryError`` from it to inject OOM) and the fiber resume order.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import sys
import time
import types
import weakref

import numpy as np

from . import compiler

# ---- configuration --------------------------------------------------------------------------------

MAX_SHARED_PER_BLOCK = 49152          # without the opt-in attribute
MAX_SHARED_PER_BLOCK_OPTIN = 232448   # H100
SHARED_PER_SM = 233472                # 228 KB
RESERVED_SHARED_PER_BLOCK = 1024
MAX_THREADS_PER_SM = 2048
MAX_BLOCKS_PER_SM = 32
REGISTERS_PER_SM = 65536
REGISTERS_PER_THREAD = 64             # assumed for every kernel (no ptxas here)
ORDERS = ("forward", "reverse", "random:<seed>")
# Made-up figures in the range of an H100 SXM, for code that reads the device's description
# (cumel's benchmark computes its bound from them). Kernels do not run faster for them.
DEVICE_NAME = "cudasim emulated GPU (H100-like figures)"
COMPUTE_CAPABILITY = (9, 0)
CLOCK_RATE_KHZ = 1980000              # cudaDevAttrClockRate
MEMORY_CLOCK_RATE_KHZ = 2619000       # cudaDevAttrMemoryClockRate
MEMORY_BUS_WIDTH = 5120               # bits
L2_CACHE_SIZE = 50 * 2 ** 20
CUDA_VERSION = 13000                  # driverGetVersion, runtimeGetVersion


class Simulator:
    """Mutable settings of the emulated machine.

    Attributes
    ----------
    device_count : int
        Devices ``getDeviceCount`` reports (ids 0 .. device_count - 1).
    multiprocessor_count : int
        ``MultiProcessorCount`` of every device; small by default so grids stay small and
        grid-stride loops are exercised.
    mem_total, mem_free : int or None
        Figures of ``memGetInfo``; ``mem_free=None`` means total minus the bytes in use.
    alloc_hook : callable or None
        Called as ``alloc_hook(nbytes, device_id)`` on every allocation; raise
        ``cupy.cuda.memory.OutOfMemoryError`` from it to simulate running out of memory.
    order : str
        Fiber resume order: "forward", "reverse" or "random:<seed>" (default: $CUDASIM_ORDER,
        else "forward").
    cooperative_launch : int
        The ``CooperativeLaunch`` device attribute (1; set 0 for a device without it: a
        cooperative launch then fails with CUDA_ERROR_NOT_SUPPORTED).
    freed_blocks : int
        How many times ``MemoryPool.free_all_blocks`` was called.
    launches, last_launch : int, tuple
        Launch count and ``(kernel name, grid, block, shared_mem)`` of the latest launch.

    Device ids go up to 15.
    """

    def __init__(self):
        self.device_count = 1
        self.multiprocessor_count = 4
        self.mem_total = 80 * 2 ** 30
        self.mem_free = None
        self.alloc_hook = None
        self.order = os.environ.get("CUDASIM_ORDER", "forward")
        self.used_bytes = [0] * 16
        self.current_device = 0
        self.current_stream = None
        self.launches = 0           # kernel launches so far
        self.last_launch = None     # (kernel name, grid, block, shared_mem) of the latest one
        self.cooperative_launch = 1
        self.freed_blocks = 0


sim = Simulator()


def reset():
    """Back to the defaults (the fixture calls this on entry and exit)."""
    global sim
    sim.__init__()


def parse_order(order):
    """(code, seed) for the C++ scheduler: 0 forward, 1 reverse, 2 random."""
    if order == "forward":
        return 0, 0
    if order == "reverse":
        return 1, 0
    if isinstance(order, str) and order.startswith("random:") and order[7:].isdigit():
        return 2, int(order[7:])
    raise ValueError(f"cudasim order must be one of {ORDERS}, got {order!r}")


@contextlib.contextmanager
def order(name):
    """Run the launches inside the block with fiber resume order ``name``."""
    parse_order(name)
    saved, sim.order = sim.order, name
    try:
        yield
    finally:
        sim.order = saved


# ---- errors ---------------------------------------------------------------------------------------

class CUDADriverError(RuntimeError):
    pass


class CUDARuntimeError(RuntimeError):
    pass


class OutOfMemoryError(MemoryError):
    pass


class LaunchError(RuntimeError):
    """A kernel launch failed inside the emulator (barrier mismatch, deadlock, shared memory
    overrun, ...); the message names the kernel, threads and source lines."""


# ---- devices, streams, memory ---------------------------------------------------------------------

class Device:
    def __init__(self, device=None):
        self.id = sim.current_device if device is None else int(device)
        if not 0 <= self.id < sim.device_count:
            raise CUDARuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {self.id}")
        self._saved = []

    @property
    def compute_capability(self):
        return f"{COMPUTE_CAPABILITY[0]}{COMPUTE_CAPABILITY[1]}"

    @property
    def attributes(self):
        return {"MultiProcessorCount": sim.multiprocessor_count,
                "ClockRate": CLOCK_RATE_KHZ, "MemoryClockRate": MEMORY_CLOCK_RATE_KHZ,
                "GlobalMemoryBusWidth": MEMORY_BUS_WIDTH, "L2CacheSize": L2_CACHE_SIZE,
                "ComputeCapabilityMajor": COMPUTE_CAPABILITY[0],
                "ComputeCapabilityMinor": COMPUTE_CAPABILITY[1],
                "MaxRegistersPerMultiprocessor": REGISTERS_PER_SM,
                "MaxBlocksPerMultiprocessor": MAX_BLOCKS_PER_SM,
                "MaxSharedMemoryPerBlock": MAX_SHARED_PER_BLOCK,
                "MaxSharedMemoryPerBlockOptin": MAX_SHARED_PER_BLOCK_OPTIN,
                "MaxSharedMemoryPerMultiprocessor": SHARED_PER_SM,
                "CooperativeLaunch": sim.cooperative_launch, "MaxThreadsPerBlock": 1024,
                "MaxThreadsPerMultiProcessor": MAX_THREADS_PER_SM, "WarpSize": 32,
                "MaxBlockDimX": 1024, "MaxBlockDimY": 1024, "MaxBlockDimZ": 64,
                "MaxGridDimX": 2 ** 31 - 1, "MaxGridDimY": 65535, "MaxGridDimZ": 65535}

    def use(self):
        sim.current_device = self.id

    def synchronize(self):
        pass

    def __enter__(self):
        self._saved.append(sim.current_device)
        sim.current_device = self.id
        return self

    def __exit__(self, *exc):
        sim.current_device = self._saved.pop()

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class Stream:
    null = None

    def __init__(self, null=False, non_blocking=False, ptr=0):
        self.non_blocking = non_blocking
        self.ptr = ptr
        self._saved = []

    def synchronize(self):
        pass

    def use(self):
        sim.current_stream = self
        return self

    def __enter__(self):
        self._saved.append(sim.current_stream)
        sim.current_stream = self
        return self

    def __exit__(self, *exc):
        sim.current_stream = self._saved.pop()

    def record(self, event=None):
        """An :class:`Event` marking the work queued so far (all of it done: launches run
        synchronously here)."""
        event = Event() if event is None else event
        event.record(self)
        return event


class ExternalStream(Stream):
    """A stream owned by another library (torch), known by its pointer."""

    def __init__(self, ptr, device_id=-1):
        super().__init__(ptr=ptr)


class Event:
    """A CUDA event. Launches run synchronously here, so an event is complete when recorded and
    its time stamp is the host clock at :meth:`record` (what :func:`get_elapsed_time` reads)."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        if interprocess and not disable_timing:
            raise CUDARuntimeError("cudaErrorInvalidValue: an interprocess event needs "
                                   "disable_timing=True")
        self.disable_timing = disable_timing
        self.recorded = False
        self._stamp = None

    def record(self, stream=None):
        self.recorded = True
        self._stamp = time.perf_counter()

    def synchronize(self):
        pass

    @property
    def done(self):
        return True


Stream.null = Stream(null=True)


def get_elapsed_time(start_event, end_event):
    """Milliseconds between two recorded events (``cupy.cuda.get_elapsed_time``); like
    ``cudaEventElapsedTime``, an event never recorded or made with ``disable_timing=True`` is
    an invalid resource handle."""
    for event in (start_event, end_event):
        if not isinstance(event, Event):
            raise TypeError(f"get_elapsed_time: a cupy.cuda.Event is required, got "
                            f"{type(event).__name__}")
        if event.disable_timing or not event.recorded:
            raise CUDARuntimeError("cudaErrorInvalidResourceHandle: invalid resource handle")
    return (end_event._stamp - start_event._stamp) * 1e3


# cudaDeviceAttr values (driver_types.h) of the attributes deviceGetAttribute answers
_DEVICE_ATTRIBUTES = {
    "cudaDevAttrMaxThreadsPerBlock": (1, lambda: 1024),
    "cudaDevAttrWarpSize": (10, lambda: 32),
    "cudaDevAttrClockRate": (13, lambda: CLOCK_RATE_KHZ),
    "cudaDevAttrMultiProcessorCount": (16, lambda: sim.multiprocessor_count),
    "cudaDevAttrMemoryClockRate": (36, lambda: MEMORY_CLOCK_RATE_KHZ),
    "cudaDevAttrGlobalMemoryBusWidth": (37, lambda: MEMORY_BUS_WIDTH),
    "cudaDevAttrL2CacheSize": (38, lambda: L2_CACHE_SIZE),
    "cudaDevAttrMaxThreadsPerMultiProcessor": (39, lambda: MAX_THREADS_PER_SM),
    "cudaDevAttrComputeCapabilityMajor": (75, lambda: COMPUTE_CAPABILITY[0]),
    "cudaDevAttrComputeCapabilityMinor": (76, lambda: COMPUTE_CAPABILITY[1]),
    "cudaDevAttrMaxSharedMemoryPerMultiprocessor": (81, lambda: SHARED_PER_SM),
    "cudaDevAttrMaxRegistersPerMultiprocessor": (82, lambda: REGISTERS_PER_SM),
    "cudaDevAttrCooperativeLaunch": (95, lambda: sim.cooperative_launch),
    "cudaDevAttrMaxSharedMemoryPerBlockOptin": (97, lambda: MAX_SHARED_PER_BLOCK_OPTIN),
}


def device_get_attribute(attrib, device):
    """``cupy.cuda.runtime.deviceGetAttribute(attrib, device)`` for the attributes above."""
    Device(device)                                   # an invalid ordinal raises, as CUDA does
    for number, value in _DEVICE_ATTRIBUTES.values():
        if number == attrib:
            return int(value())
    raise CUDARuntimeError(f"cudaErrorInvalidValue: device attribute {attrib} is not emulated")


def get_device_properties(device):
    """``cupy.cuda.runtime.getDeviceProperties(device)``: the fields CuPy 14 reports under
    CUDA 13, which dropped ``clockRate`` and ``memoryClockRate`` from ``cudaDeviceProp`` (read
    them with ``deviceGetAttribute``)."""
    Device(device)
    return {"name": DEVICE_NAME.encode(), "totalGlobalMem": sim.mem_total,
            "sharedMemPerBlock": MAX_SHARED_PER_BLOCK, "regsPerBlock": REGISTERS_PER_SM,
            "warpSize": 32, "maxThreadsPerBlock": 1024, "maxThreadsDim": (1024, 1024, 64),
            "maxGridSize": (2 ** 31 - 1, 65535, 65535), "totalConstMem": 65536,
            "major": COMPUTE_CAPABILITY[0], "minor": COMPUTE_CAPABILITY[1],
            "multiProcessorCount": sim.multiprocessor_count, "l2CacheSize": L2_CACHE_SIZE,
            "maxThreadsPerMultiProcessor": MAX_THREADS_PER_SM, "memoryBusWidth": MEMORY_BUS_WIDTH,
            "sharedMemPerMultiprocessor": SHARED_PER_SM, "regsPerMultiprocessor": REGISTERS_PER_SM,
            "sharedMemPerBlockOptin": MAX_SHARED_PER_BLOCK_OPTIN,
            "cooperativeLaunch": sim.cooperative_launch, "pciBusID": 0, "pciDeviceID": 0}


def get_current_stream():
    return sim.current_stream or Stream.null


class MemoryPool:
    def used_bytes(self):
        return sim.used_bytes[sim.current_device]

    def total_bytes(self):
        return self.used_bytes()

    def free_bytes(self):
        return 0                      # nothing is cached: freed arrays go straight back

    def free_all_blocks(self):
        sim.freed_blocks += 1

    def set_limit(self, size=None, fraction=None):
        pass


_pool, _pinned_pool = MemoryPool(), MemoryPool()


def get_default_memory_pool():
    return _pool


def get_default_pinned_memory_pool():
    return _pinned_pool


def alloc_pinned_memory(nbytes):
    """Host memory usable with ``numpy.frombuffer`` (pinned in real CuPy)."""
    return bytearray(int(nbytes))


def _release(device, nbytes):
    sim.used_bytes[device] -= nbytes


_tracked = weakref.WeakValueDictionary()   # id -> NumPy buffer already counted as allocated


def _account(data, device):
    """Register a fresh allocation (once per buffer): the hook may raise OutOfMemoryError."""
    if _tracked.get(id(data)) is data:
        return
    if sim.alloc_hook is not None:
        sim.alloc_hook(data.nbytes, device)
    sim.used_bytes[device] += data.nbytes
    _tracked[id(data)] = data
    weakref.finalize(data, _release, device, data.nbytes)


# ---- arrays ---------------------------------------------------------------------------------------

class _Flags:
    def __init__(self, a):
        self.c_contiguous = a.flags.c_contiguous
        self.f_contiguous = a.flags.f_contiguous
        self.owndata = a.flags.owndata

    def __getitem__(self, key):
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[key]


class _MemoryPointer:
    def __init__(self, ptr, device_id):
        self.ptr = ptr
        self.device_id = device_id


def _is_host_array(x):
    return isinstance(x, np.ndarray) and x.ndim > 0


def _device_of(args, what):
    """The device of the fake arrays among ``args`` (nested lists/tuples/dicts); TypeError on a
    non-scalar NumPy array, ValueError on arrays of two devices."""
    found = set()

    def visit(x):
        if isinstance(x, ndarray):
            found.add(x._device)
        elif _is_host_array(x):
            raise TypeError(f"{what}: unsupported type {type(x)} (a NumPy array mixed with CuPy "
                            "arrays; copy it with cupy.asarray first)")
        elif isinstance(x, (list, tuple)):
            for y in x:
                visit(y)
        elif isinstance(x, dict):
            for y in x.values():
                visit(y)

    visit(args)
    if len(found) > 1:
        raise ValueError(f"{what}: arrays on devices {sorted(found)} mixed")
    return found.pop() if found else None


def _unwrap(x):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, list):
        return [_unwrap(y) for y in x]
    if isinstance(x, tuple):
        return tuple(_unwrap(y) for y in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _wrap(x, device, fresh=True):
    if isinstance(x, np.ndarray):
        return ndarray._from(x, device)
    if isinstance(x, np.generic):
        return ndarray._from(np.asarray(x), device)     # CuPy reductions give 0-d arrays
    if isinstance(x, tuple):
        return tuple(_wrap(y, device) for y in x)
    if isinstance(x, list):
        return [_wrap(y, device) for y in x]
    return x


class ndarray:
    """Device array: a NumPy array in host memory, tagged with its device. Not a NumPy array."""

    __array_priority__ = 100

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        data = np.empty(shape, dtype, order=order)
        _account(data, sim.current_device)
        self._a, self._device = data, sim.current_device

    @classmethod
    def _from(cls, data, device):
        obj = cls.__new__(cls)
        if data.base is None and data.size:
            _account(data, device)
        obj._a, obj._device = data, device
        return obj

    # -- attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    strides = property(lambda self: self._a.strides)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: _Flags(self._a))
    T = property(lambda self: self._view(self._a.T))
    device = property(lambda self: Device(self._device))

    @property
    def data(self):
        return _MemoryPointer(self._a.__array_interface__["data"][0], self._device)

    def _view(self, a):
        return ndarray._from(a, self._device)

    # -- conversion
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def set(self, arr, stream=None):
        """Copy the host array ``arr`` (same shape and dtype, as CuPy requires) into this one."""
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"set: a numpy.ndarray is required, got {type(arr).__name__}")
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError(f"set: shape and dtype must match: {arr.shape} {arr.dtype} into "
                             f"{self.shape} {self.dtype}")
        self._a[...] = arr

    def get(self, stream=None, order="C", out=None):
        if out is not None:
            out[...] = self._a
            return out
        return np.array(self._a, order="A" if order == "A" else order)

    def item(self):
        return self._a.item()

    def tolist(self):
        return self._a.tolist()

    def __bool__(self):
        return bool(self._a)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __index__(self):
        return self._a.__index__()

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (self._view(x) if isinstance(x, np.ndarray) else _wrap(x, self._device) for x in self._a)

    def __repr__(self):
        return f"fakecupy.{self._a!r}"

    def __dlpack__(self, *a, **k):
        raise TypeError("fakecupy arrays do not export DLPack")

    # -- shape
    def reshape(self, *shape, order="C"):
        return self._view(self._a.reshape(*shape, order=order))

    def transpose(self, *axes):
        return self._view(self._a.transpose(*axes))

    def swapaxes(self, a, b):
        return self._view(self._a.swapaxes(a, b))

    def ravel(self, order="C"):
        return _wrap(self._a.ravel(order), self._device)

    def squeeze(self, axis=None):
        return self._view(self._a.squeeze(axis))

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        return _wrap(self._a.astype(dtype, order=order, copy=copy), self._device)

    def copy(self, order="C"):
        return _wrap(self._a.copy(order=order), self._device)

    def view(self, dtype=None):
        return self._view(self._a.view(dtype) if dtype is not None else self._a.view())

    def fill(self, value):
        self._a.fill(value)

    # -- indexing
    def __getitem__(self, key):
        _device_of(key, "indexing")
        return _wrap(self._a[_unwrap(key)], self._device)

    def __setitem__(self, key, value):
        # CuPy accepts host values here (it copies them); device values must be on this device
        if isinstance(value, ndarray) and value._device != self._device:
            raise ValueError("setitem: arrays on different devices")
        self._a[_unwrap(key)] = _unwrap(value)

    # -- numpy protocol: NumPy functions on fake arrays give fake arrays
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        device = _device_of((inputs, kwargs), f"numpy.{ufunc.__name__}")
        result = getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs))
        if "out" in kwargs:
            out = kwargs["out"]
            return out[0] if isinstance(out, tuple) and len(out) == 1 else out
        return _wrap(result, device)

    def __array_function__(self, func, types, args, kwargs):
        device = _device_of((args, kwargs), f"numpy.{func.__name__}")
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)), device)

    # -- reductions
    def _reduce(name):
        def method(self, *args, **kwargs):
            return _wrap(getattr(np, name)(self._a, *_unwrap(args), **_unwrap(kwargs)), self._device)
        method.__name__ = name
        return method

    sum, max, min, all, any = _reduce("sum"), _reduce("max"), _reduce("min"), _reduce("all"), _reduce("any")
    mean, prod, argmax, argmin = _reduce("mean"), _reduce("prod"), _reduce("argmax"), _reduce("argmin")
    std, var = _reduce("std"), _reduce("var")
    del _reduce

    def _binary(ufunc, reflected=False):
        if reflected:
            return lambda self, other: ufunc(other, self)
        return lambda self, other: ufunc(self, other)

    __add__, __radd__ = _binary(np.add), _binary(np.add, True)
    __sub__, __rsub__ = _binary(np.subtract), _binary(np.subtract, True)
    __mul__, __rmul__ = _binary(np.multiply), _binary(np.multiply, True)
    __truediv__, __rtruediv__ = _binary(np.true_divide), _binary(np.true_divide, True)
    __floordiv__, __rfloordiv__ = _binary(np.floor_divide), _binary(np.floor_divide, True)
    __mod__, __rmod__ = _binary(np.remainder), _binary(np.remainder, True)
    __pow__, __rpow__ = _binary(np.power), _binary(np.power, True)
    __matmul__, __rmatmul__ = _binary(np.matmul), _binary(np.matmul, True)
    __and__, __rand__ = _binary(np.bitwise_and), _binary(np.bitwise_and, True)
    __or__, __ror__ = _binary(np.bitwise_or), _binary(np.bitwise_or, True)
    __xor__, __rxor__ = _binary(np.bitwise_xor), _binary(np.bitwise_xor, True)
    __lt__, __le__ = _binary(np.less), _binary(np.less_equal)
    __gt__, __ge__ = _binary(np.greater), _binary(np.greater_equal)
    __eq__, __ne__ = _binary(np.equal), _binary(np.not_equal)
    del _binary
    __hash__ = None

    def __neg__(self):
        return np.negative(self)

    def __pos__(self):
        return self.copy()

    def __abs__(self):
        return np.absolute(self)

    def __invert__(self):
        return np.invert(self)

    def _inplace(ufunc):
        def method(self, other):
            ufunc(self, other, out=self)
            return self
        return method

    __iadd__, __isub__, __imul__ = _inplace(np.add), _inplace(np.subtract), _inplace(np.multiply)
    __itruediv__ = _inplace(np.true_divide)
    del _inplace


# ---- module functions -----------------------------------------------------------------------------

def asarray(a, dtype=None, order=None):
    """NumPy (or anything array-like on the host) -> a copy on the current device; a fake array
    on the current device is returned as is (or cast)."""
    if isinstance(a, ndarray):
        if a._device == sim.current_device:
            return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
        return _copy_to_current(a._a, dtype, order)
    return _copy_to_current(a, dtype, order)


def _copy_to_current(a, dtype, order):
    data = np.array(a, dtype=dtype, order=order or "K", copy=True)
    return ndarray._from(data, sim.current_device)


def array(obj, dtype=None, copy=True, order="K", ndmin=0):
    if isinstance(obj, ndarray):
        return _wrap(np.array(obj._a, dtype=dtype, copy=True, order=order, ndmin=ndmin), obj._device)
    return ndarray._from(np.array(obj, dtype=dtype, copy=True, order=order, ndmin=ndmin),
                         sim.current_device)


def asnumpy(a, stream=None, order="C", out=None):
    if isinstance(a, ndarray):
        return a.get(order=order, out=out)
    return np.asarray(a, order=order)


def get_array_module(*args):
    """The fake ``cupy`` module when any argument is a fake array, else ``numpy``."""
    return _fake_module if any(isinstance(a, ndarray) for a in args) else np


# Creation functions: no array arguments, the result lives on the current device.
_CREATION = {"empty", "zeros", "ones", "full", "arange", "linspace", "eye", "identity",
             "logspace", "tri"}


def _numpy_wrapper(name):
    func = getattr(np, name)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        device = _device_of((args, kwargs), f"cupy.{name}")
        if device is None:
            if name not in _CREATION and any(isinstance(a, np.ndarray) for a in args):
                raise TypeError(f"cupy.{name}: unsupported type numpy.ndarray")
            device = sim.current_device
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)), device)

    return wrapper


# ---- kernels --------------------------------------------------------------------------------------

_POINTEE_DTYPES = {"float": np.float32, "double": np.float64, "int": np.int32,
                   "long long": np.int64, "unsigned": np.uint32, "unsigned long long": np.uint64,
                   "bool": np.bool_, "char": np.int8, "signed char": np.int8,
                   "unsigned char": np.uint8, "short": np.int16, "unsigned short": np.uint16,
                   "long": np.int64, "unsigned long": np.uint64}
_CTYPES = {"float": ctypes.c_float, "double": ctypes.c_double, "int": ctypes.c_int32,
           "long long": ctypes.c_int64, "unsigned": ctypes.c_uint32,
           "unsigned long long": ctypes.c_uint64, "bool": ctypes.c_bool, "char": ctypes.c_int8,
           "signed char": ctypes.c_int8, "unsigned char": ctypes.c_uint8,
           "short": ctypes.c_int16, "unsigned short": ctypes.c_uint16, "long": ctypes.c_int64,
           "unsigned long": ctypes.c_uint64}


class _LaunchConfig(ctypes.Structure):
    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3),
                ("dynamic_shared_bytes", ctypes.c_ulonglong),
                ("shared_limit_bytes", ctypes.c_ulonglong), ("cooperative", ctypes.c_int),
                ("order", ctypes.c_int), ("seed", ctypes.c_ulonglong)]


_kernels_by_ptr = {}


def occupancy(block_size, dynamic_smem):
    """Resident blocks per SM for ``block_size`` threads and ``dynamic_smem`` bytes: the minimum
    of the thread, block-count, register (REGISTERS_PER_THREAD assumed) and shared-memory
    limits."""
    threads = 32 * math.ceil(block_size / 32)
    by_threads = MAX_THREADS_PER_SM // threads
    by_registers = REGISTERS_PER_SM // (REGISTERS_PER_THREAD * threads)
    by_shared = SHARED_PER_SM // (int(dynamic_smem) + RESERVED_SHARED_PER_BLOCK)
    return max(0, min(MAX_BLOCKS_PER_SM, by_threads, by_registers, by_shared))


def occupancyMaxActiveBlocksPerMultiprocessor(func, block_size, dynamic_smem):
    if func not in _kernels_by_ptr:
        raise CUDADriverError("CUDA_ERROR_INVALID_HANDLE: unknown function")
    return occupancy(block_size, dynamic_smem)


class _Function:
    def __init__(self, ptr):
        self.ptr = ptr


def _dims(d, what):
    d = (d,) if isinstance(d, (int, np.integer)) else tuple(d)
    if not 1 <= len(d) <= 3 or not all(isinstance(x, (int, np.integer)) for x in d):
        raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: {what} must be 1-3 ints, got {d!r}")
    return tuple(int(x) for x in d) + (1,) * (3 - len(d))


class RawKernel:
    """A kernel of a :class:`RawModule`: ``kernel(grid, block, args, shared_mem=0)``."""

    def __init__(self, module, name):
        self.module, self.name = module, name
        self.signature = module._compiled.signatures[name]
        self._launcher = module._compiled.launchers[name]
        self._max_dynamic = MAX_SHARED_PER_BLOCK
        self._opted_in = False
        self.kernel = _Function(id(self))
        _kernels_by_ptr[self.kernel.ptr] = self

    @property
    def max_dynamic_shared_size_bytes(self):
        return self._max_dynamic

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, value):
        if not 0 <= int(value) <= MAX_SHARED_PER_BLOCK_OPTIN:
            raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: max_dynamic_shared_size_bytes={value} "
                                  f"is above MaxSharedMemoryPerBlockOptin={MAX_SHARED_PER_BLOCK_OPTIN}")
        self._max_dynamic = int(value)
        self._opted_in = True

    @property
    def attributes(self):
        return {"max_dynamic_shared_size_bytes": self._max_dynamic,
                "max_threads_per_block": 1024, "num_regs": REGISTERS_PER_THREAD,
                "shared_size_bytes": 0}

    def _arguments(self, args):
        """ctypes values for ``args``, checked against the C++ parameter types."""
        if len(args) != len(self.signature):
            raise TypeError(f"{self.name}: {len(args)} arguments given, the kernel takes "
                            f"{len(self.signature)} ({','.join(self.signature)})")
        values = []
        for i, (ctype, arg) in enumerate(zip(self.signature, args)):
            if ctype.endswith("*"):
                pointee = ctype[:-1].removeprefix("const ").strip()
                want = np.dtype(_POINTEE_DTYPES[pointee])
                if not isinstance(arg, ndarray):
                    raise TypeError(f"{self.name}: argument {i} is {ctype} but got "
                                    f"{type(arg).__name__} (needs a cupy.ndarray of {want})")
                if arg.dtype != want:
                    raise TypeError(f"{self.name}: argument {i} is {ctype} but got an array of "
                                    f"{arg.dtype} (needs {want})")
                if arg._device != sim.current_device:
                    raise CUDADriverError(
                        f"CUDA_ERROR_ILLEGAL_ADDRESS: {self.name}: argument {i} lives on device "
                        f"{arg._device}, the launch runs on device {sim.current_device}")
                values.append(ctypes.c_void_p(arg.data.ptr))
                continue
            want = np.dtype(_POINTEE_DTYPES[ctype])
            if not isinstance(arg, np.generic) or arg.dtype != want:
                got = f"numpy.{arg.dtype}" if isinstance(arg, np.generic) else type(arg).__name__
                raise TypeError(f"{self.name}: argument {i} is {ctype} (numpy.{want}) but got {got}")
            values.append(_CTYPES[ctype](arg.item()))
        return values

    def __call__(self, grid, block, args, shared_mem=0, stream=None, enable_cooperative_groups=False):
        grid, block = _dims(grid, "grid"), _dims(block, "block")
        if min(grid) < 1 or min(block) < 1:
            raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: {self.name}: grid {grid} and block "
                                  f"{block} dimensions must be >= 1")
        threads = block[0] * block[1] * block[2]
        if threads > 1024 or block[2] > 64:
            raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: {self.name}: block {block} has "
                                  f"{threads} threads, more than 1024")
        shared_mem = int(shared_mem)
        if shared_mem > self._max_dynamic:
            raise CUDADriverError(
                f"CUDA_ERROR_INVALID_VALUE: {self.name}: {shared_mem} bytes of dynamic shared "
                f"memory exceed the kernel's max_dynamic_shared_size_bytes={self._max_dynamic} "
                "(set it to opt in above 48 KB)")
        cooperative = self.module.enable_cooperative_groups or enable_cooperative_groups
        if cooperative and not sim.cooperative_launch:
            raise CUDADriverError(f"CUDA_ERROR_NOT_SUPPORTED: {self.name}: cooperative launch on "
                                  "a device without CooperativeLaunch")
        if cooperative:
            limit = occupancy(threads, shared_mem) * sim.multiprocessor_count
            if grid[0] * grid[1] * grid[2] > limit:
                raise CUDADriverError(
                    f"CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE: {self.name}: grid {grid} exceeds "
                    f"{limit} co-resident blocks ({occupancy(threads, shared_mem)} per SM x "
                    f"{sim.multiprocessor_count} SMs)")
        values = self._arguments(args)
        if self.module._device != sim.current_device:
            raise CUDADriverError(f"CUDA_ERROR_INVALID_HANDLE: {self.name} was compiled for device "
                                  f"{self.module._device}, the current device is {sim.current_device}")
        code, seed = parse_order(sim.order)
        cfg = _LaunchConfig((ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), shared_mem,
                            MAX_SHARED_PER_BLOCK_OPTIN if self._opted_in else MAX_SHARED_PER_BLOCK,
                            int(bool(cooperative)), code, seed)
        pointers = (ctypes.c_void_p * max(1, len(values)))(
            *(ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values))
        err = ctypes.create_string_buffer(4096)
        sim.launches += 1
        sim.last_launch = (self.name, grid, block, shared_mem)
        if self._launcher(pointers, ctypes.byref(cfg), err, len(err)) != 0:
            raise LaunchError(f"cudasim launch of {self.name} (grid {grid}, block {block}, "
                              f"order {sim.order}) failed: {err.value.decode(errors='replace')}")


class RawModule:
    """``cupy.RawModule``: compiled by g++ against the emulator runtime (see ``compiler.py``)."""

    def __init__(self, code=None, path=None, options=(), backend="nvrtc", translate_cucomplex=False,
                 enable_cooperative_groups=False, name_expressions=None, jitify=False):
        if code is None:
            with open(path) as f:
                code = f.read()
        self.code, self.options = code, tuple(options)
        self.name_expressions = tuple(name_expressions or ())
        self.enable_cooperative_groups = enable_cooperative_groups
        self._device = sim.current_device
        self._compiled = None
        self._kernels = {}

    def compile(self, log_stream=None):
        if self._compiled is None:
            self._compiled = compiler.compile_module(self.code, self.options, self.name_expressions)
        return self

    def get_function(self, name):
        self.compile()
        if name not in self._compiled.launchers:
            # like NVRTC lowering an extern "C" kernel that has no name expression: build a
            # module with one more entry point (kernels fetched before keep their launchers)
            try:
                self._compiled = compiler.compile_module(
                    self.code, self.options, self.name_expressions + (name,))
            except compiler.CompileError as exc:
                raise CUDADriverError(f"CUDA_ERROR_NOT_FOUND: no kernel named {name}:\n{exc}") from None
        if name not in self._kernels:
            self._kernels[name] = RawKernel(self, name)
        return self._kernels[name]


# ---- testing --------------------------------------------------------------------------------------

def _host(x):
    return x.get() if isinstance(x, ndarray) else x


def assert_array_equal(x, y, *args, **kwargs):
    np.testing.assert_array_equal(_host(x), _host(y), *args, **kwargs)


def assert_allclose(actual, desired, *args, **kwargs):
    np.testing.assert_allclose(_host(actual), _host(desired), *args, **kwargs)


# ---- the module objects ---------------------------------------------------------------------------

def _build_modules():
    """``cupy`` and the submodules cumel reaches, as fresh module objects."""
    cupy = types.ModuleType("cupy", "fakecupy: the cudasim stand-in for CuPy")
    cuda = types.ModuleType("cupy.cuda")
    driver = types.ModuleType("cupy.cuda.driver")
    runtime = types.ModuleType("cupy.cuda.runtime")
    memory = types.ModuleType("cupy.cuda.memory")
    testing = types.ModuleType("cupy.testing")

    driver.CUDADriverError = CUDADriverError
    driver.occupancyMaxActiveBlocksPerMultiprocessor = occupancyMaxActiveBlocksPerMultiprocessor
    runtime.CUDARuntimeError = CUDARuntimeError
    runtime.getDeviceCount = lambda: sim.device_count
    runtime.getDeviceProperties = get_device_properties
    runtime.deviceGetAttribute = device_get_attribute
    for attribute_name, (number, _) in _DEVICE_ATTRIBUTES.items():
        setattr(runtime, attribute_name, number)
    runtime.driverGetVersion = lambda: CUDA_VERSION
    runtime.runtimeGetVersion = lambda: CUDA_VERSION
    runtime.getDevice = lambda: sim.current_device
    runtime.setDevice = lambda i: Device(i).use()

    def mem_get_info():
        total = sim.mem_total
        free = sim.mem_free if sim.mem_free is not None else total - sim.used_bytes[sim.current_device]
        return int(free), int(total)

    runtime.memGetInfo = mem_get_info
    memory.OutOfMemoryError = OutOfMemoryError
    cuda.Device, cuda.Stream, cuda.get_current_stream = Device, Stream, get_current_stream
    cuda.ExternalStream, cuda.Event = ExternalStream, Event
    cuda.get_elapsed_time = get_elapsed_time
    cuda.alloc_pinned_memory = alloc_pinned_memory
    cuda.driver, cuda.runtime, cuda.memory = driver, runtime, memory
    cuda.OutOfMemoryError = OutOfMemoryError
    cuda.is_available = lambda: sim.device_count > 0
    testing.assert_array_equal, testing.assert_allclose = assert_array_equal, assert_allclose

    explicit = dict(ndarray=ndarray, asarray=asarray, array=array, asnumpy=asnumpy,
                    get_array_module=get_array_module, RawModule=RawModule, RawKernel=RawKernel,
                    get_default_memory_pool=get_default_memory_pool,
                    get_default_pinned_memory_pool=get_default_pinned_memory_pool,
                    cuda=cuda, testing=testing, cudasim=sim, OutOfMemoryError=OutOfMemoryError,
                    nan=np.nan, inf=np.inf, pi=np.pi, newaxis=None, dtype=np.dtype)
    for k, v in explicit.items():
        setattr(cupy, k, v)
    cupy.__file__ = __file__

    def module_getattr(name):
        if name.startswith("__"):
            raise AttributeError(name)
        attr = getattr(np, name)      # AttributeError for names NumPy lacks too
        if isinstance(attr, type) or not callable(attr):
            return attr               # dtypes (cupy.float32 is numpy.float32), constants
        wrapped = _numpy_wrapper(name)
        setattr(cupy, name, wrapped)
        return wrapped

    cupy.__getattr__ = module_getattr
    return {"cupy": cupy, "cupy.cuda": cuda, "cupy.cuda.driver": driver,
            "cupy.cuda.runtime": runtime, "cupy.cuda.memory": memory, "cupy.testing": testing}


_modules = _build_modules()
_fake_module = _modules["cupy"]
MODULE_NAMES = tuple(_modules)


def install():
    """Put the fake modules into ``sys.modules`` (fresh settings); returns the saved entries."""
    reset()
    saved = {name: sys.modules.get(name) for name in MODULE_NAMES}
    sys.modules.update(_modules)
    return saved


def uninstall(saved):
    """Restore what :func:`install` replaced."""
    for name, module in saved.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module
    reset()
