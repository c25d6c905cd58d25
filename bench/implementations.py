"""What the benchmark times: cumel's solvers and the peers, as :class:`Implementation` objects.

An implementation prepares a :class:`Solve` for a batch, a settings object and a backend: every
one-off cost (building transforms, copying the batch to the GPU) happens in ``prepare``, and
``Solve.run`` is the call that is timed. Results stay in the implementation's own array type
(NumPy, CuPy, torch) until the timing is over.

Peers (``--peers`` names)
-------------------------
torch-sgd
    torchaudio 0.8's SGD loop in PyTorch (:mod:`bench.torch_sgd`), CPU and CUDA.
torchaudio
    ``torchaudio.transforms.InverseMelScale`` (2.x, least squares + relu): driver ``gels`` on
    CPU and CUDA, ``gelsd`` on the CPU (CUDA has only ``gels``).
mindspore
    ``mindspore.dataset.audio.InverseMelScale`` on the batch (it solves each channel in turn).
librosa
    ``librosa.util.nnls(fb.T, M)`` (L-BFGS-B, librosa's own stopping rule) on the power
    spectrogram; ``mel_to_stft`` would also take a root, which we do not want here.
numpy
    ``numpy.linalg.lstsq`` + relu: always measured, the default baseline.
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .batches import workload_filterbank
from .environment import cpu_model, portable_path

# cumel's GPU rows: "cuda" is device-resident (a CuPy batch, transfers not timed), "cuda-host"
# a NumPy batch in and out with device="cuda" (streamed through the device in chunks, transfers
# timed), "cuda-torch" torch CUDA tensors in and out (DLPack, torch's stream). Peers know cpu/cuda.
BACKENDS = ("cpu", "cuda", "cuda-host", "cuda-torch")
DEVICE_BACKENDS = ("cpu", "cuda")
CUMEL_SOLVERS = ("nnls", "lstsq", "torchaudio", "mindspore")
PEERS = ("torch-sgd", "torchaudio", "mindspore", "librosa", "numpy")
BASELINE = "numpy-lstsq"
DEFAULT_TOLERANCES = {"tolerance_loss": 1e-5, "tolerance_change": 1e-8}


class Unavailable(Exception):
    """The implementation cannot run here (library not installed, no GPU): a skipped row."""


@dataclass
class Settings:
    """What every row of one run shares.

    Attributes
    ----------
    max_iter : int
        Iteration cap of the fixed-iteration solvers (cumel's "torchaudio" and "mindspore",
        torch-sgd, MindSpore). cumel "nnls" keeps its own cap: it stops on convergence.
    tolerance_zero : bool
        Tolerances 0 for those solvers, so that they run all ``max_iter`` iterations.
    repeats : int
        Timed runs after the warm-up; a row reports their median.
    seed : int
        Start of the SGD solvers.
    frames_for : dict
        ``{implementation id or peer name: frames}``: run that one on a cropped batch.
    """
    max_iter: int = 200
    tolerance_zero: bool = False
    repeats: int = 3
    seed: int = 0
    frames_for: dict = field(default_factory=dict)

    def tolerances(self, smallest=0.0):
        """Stopping tolerances of the fixed-iteration solvers; ``smallest`` replaces 0 for a
        library that rejects 0 (MindSpore)."""
        if self.tolerance_zero:
            return {"tolerance_loss": smallest, "tolerance_change": smallest}
        return dict(DEFAULT_TOLERANCES)

    def to_json(self):
        return {"max_iter": self.max_iter, "tolerance_zero": self.tolerance_zero,
                "repeats": self.repeats, "seed": self.seed, "frames_for": dict(self.frames_for)}

    @classmethod
    def from_json(cls, data):
        return cls(**data)


def _nothing():
    pass


@dataclass
class Solve:
    """One implementation prepared on one batch and backend.

    Attributes
    ----------
    run : callable
        ``run(report) -> (result, iterations)``: one solve of the whole batch. ``iterations`` is
        the largest per-frame count or the global count (0 for direct solvers, None when the
        library does not say); with ``report=False`` an implementation may skip the extra work
        of counting (the timed runs), with ``report=True`` (the warm-up) it should not.
    device : str
        Name of the CPU or GPU it runs on.
    synchronize : callable
        Waits for queued device work (GPU); nothing on the CPU.
    to_numpy : callable
        ``result`` -> host ndarray of shape (B, n_stft, T).
    """
    run: Callable
    device: str
    synchronize: Callable = _nothing
    to_numpy: Callable = np.asarray


@dataclass(frozen=True)
class Implementation:
    """A row kind.

    Attributes
    ----------
    id : str
        Row name (``--baseline``, ``--frames-for``).
    label : str
        What it is, in words.
    peer : str or None
        The ``--peers`` name; None for cumel's own solvers.
    requires : tuple of str
        Modules that must be importable (a "not installed" row otherwise).
    backends : tuple of str
    iteration_cap : bool
        Whether ``--max-iter`` and ``--tolerance-zero`` apply.
    version : callable
        ``() -> str``, the version of the library that does the work.
    prepare : callable
        ``(batch, settings, backend) -> Solve``; raises :class:`Unavailable` to skip.
    """
    id: str
    label: str
    peer: Optional[str]
    requires: tuple
    backends: tuple
    iteration_cap: bool
    version: Callable
    prepare: Callable

    def check_installed(self):
        """Raise :class:`Unavailable` naming the missing modules."""
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            raise Unavailable(f"not installed: {', '.join(missing)} "
                              f"(in {portable_path(sys.executable)})")

    def matches(self, key):
        """Whether a ``--python-for``/``--frames-for`` key names this implementation: its id,
        its peer name or a module it requires ("torch" names both torch peers)."""
        return key in (self.id, self.peer) or key in self.requires


# -- backends -------------------------------------------------------------------------------------

def _cupy_backend():
    """``(cupy, device name)``; :class:`Unavailable` when no GPU is usable through CuPy."""
    try:
        import cupy
    except Exception as exc:
        raise Unavailable(f"no usable GPU: CuPy is not importable ({first_line(exc)})") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise Unavailable(f"no usable GPU: {first_line(exc)}") from None
    if count == 0:
        raise Unavailable("no usable GPU: CuPy sees no CUDA device")
    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
    return cupy, name.decode() if isinstance(name, bytes) else str(name)


def _torch_backend(backend):
    """``(torch, torch.device, synchronize, device name)`` for ``backend``."""
    import torch
    if backend == "cuda":
        if not torch.cuda.is_available():
            raise Unavailable("no usable GPU: torch.cuda.is_available() is False")
        device = torch.device("cuda")
        return torch, device, torch.cuda.synchronize, torch.cuda.get_device_name(device)
    return torch, torch.device("cpu"), _nothing, cpu_model()


def _torch_to_numpy(tensor):
    return tensor.detach().cpu().numpy()


def first_line(exc):
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- cumel ----------------------------------------------------------------------------------------

def _cumel_version():
    import cumel
    return cumel.__version__


def _prepare_cumel(solver, batch, settings, backend):
    import cumel
    fixed = {}
    if solver in ("torchaudio", "mindspore"):
        fixed = dict(max_iter=settings.max_iter, **settings.tolerances())
    transform = cumel.InverseMelScale(**batch.workload.inverse_kwargs(), solver=solver,
                                      seed=settings.seed,
                                      device="cpu" if backend == "cpu" else "cuda", **fixed)
    if backend == "cuda":
        cupy, device = _cupy_backend()
        mel = cupy.asarray(batch.mel)          # resident on the GPU: transfers are not timed
        synchronize, to_numpy = cupy.cuda.get_current_stream().synchronize, cupy.asnumpy
    elif backend == "cuda-host":
        _, device = _cupy_backend()            # host in, host out: every transfer is timed
        mel, synchronize, to_numpy = batch.mel, _nothing, np.asarray
    elif backend == "cuda-torch":
        _cupy_backend()
        if importlib.util.find_spec("torch") is None:
            raise Unavailable(f"not installed: torch (in {portable_path(sys.executable)})")
        torch, torch_device, synchronize, device = _torch_backend("cuda")
        mel = torch.from_numpy(batch.mel).to(torch_device)     # resident, like the "cuda" row
        to_numpy = _torch_to_numpy
    else:
        mel, device, synchronize, to_numpy = batch.mel, cpu_model(), _nothing, np.asarray

    def run(report):
        if not report:
            return transform(mel), None
        S, info = transform(mel, return_info=True)
        return S, int(np.max(info.iterations))

    return Solve(run, device, synchronize, to_numpy)


def _cumel_implementation(solver):
    labels = {"nnls": "cumel nnls (converged non-negative least squares)",
              "lstsq": "cumel lstsq (pinv + relu, torchaudio 2.x answer)",
              "torchaudio": "cumel torchaudio (torchaudio 0.8 SGD, exact)",
              "mindspore": "cumel mindspore (MindSpore gradient descent, exact)"}
    return Implementation(
        id=f"cumel-{solver}", label=labels[solver], peer=None, requires=(), backends=BACKENDS,
        iteration_cap=solver in ("torchaudio", "mindspore"), version=_cumel_version,
        prepare=lambda batch, settings, backend: _prepare_cumel(solver, batch, settings, backend))


# -- peers ----------------------------------------------------------------------------------------

def _module_version(module):
    def version():
        return importlib.import_module(module).__version__
    return version


def _prepare_torch_sgd(batch, settings, backend):
    torch, device, synchronize, name = _torch_backend(backend)
    from .torch_sgd import inverse_mel_scale_sgd
    mel = torch.from_numpy(batch.mel).to(device)
    fb = torch.from_numpy(workload_filterbank(batch.workload, np.float32)).to(device)
    tolerances = settings.tolerances()

    def run(report):
        torch.manual_seed(settings.seed)
        return inverse_mel_scale_sgd(mel, fb, max_iter=settings.max_iter, **tolerances)

    return Solve(run, name, synchronize, _torch_to_numpy)


def _prepare_torchaudio(driver, batch, settings, backend):
    torch, device, synchronize, name = _torch_backend(backend)
    import torchaudio
    w = batch.workload
    transform = torchaudio.transforms.InverseMelScale(
        n_stft=w.n_stft, n_mels=w.n_mels, sample_rate=w.sample_rate, f_min=w.f_min,
        f_max=w.f_max, norm=w.norm, mel_scale=w.mel_scale, driver=driver).to(device)
    mel = torch.from_numpy(batch.mel).to(device)

    def run(report):
        with torch.no_grad():
            return transform(mel), 0

    return Solve(run, name, synchronize, _torch_to_numpy)


def _torchaudio_implementation(driver, backends):
    return Implementation(
        id=f"torchaudio-{driver}", label=f"torchaudio 2.x InverseMelScale (lstsq, driver {driver})",
        peer="torchaudio", requires=("torch", "torchaudio"), backends=backends,
        iteration_cap=False, version=_module_version("torchaudio"),
        prepare=lambda batch, settings, backend: _prepare_torchaudio(driver, batch, settings,
                                                                     backend))


# MindSpore rejects a tolerance of 0 (its interval is (0, 2**24]); this is the closest it takes.
MINDSPORE_SMALLEST_TOLERANCE = float(np.finfo(np.float32).tiny)


def _prepare_mindspore(batch, settings, backend):
    import mindspore.dataset as ds
    import mindspore.dataset.audio as audio
    w = batch.workload
    transform = audio.InverseMelScale(
        n_stft=w.n_stft, n_mels=w.n_mels, sample_rate=w.sample_rate, f_min=float(w.f_min),
        f_max=float(w.f_max), max_iter=settings.max_iter,
        **settings.tolerances(smallest=MINDSPORE_SMALLEST_TOLERANCE),
        norm=audio.NormType.SLANEY if w.norm == "slaney" else audio.NormType.NONE,
        mel_type=audio.MelType.SLANEY if w.mel_scale == "slaney" else audio.MelType.HTK)

    def run(report):
        ds.config.set_seed(settings.seed)
        return transform(batch.mel), None     # (B, n_mels, T): MindSpore solves each channel

    return Solve(run, cpu_model())


def _prepare_librosa(batch, settings, backend):
    import librosa
    mel_basis = np.ascontiguousarray(workload_filterbank(batch.workload, np.float32).T)

    def run(report):
        return librosa.util.nnls(mel_basis, batch.mel), None

    return Solve(run, cpu_model())


def _prepare_numpy_lstsq(batch, settings, backend):
    A = np.ascontiguousarray(workload_filterbank(batch.workload, np.float32).T)
    n_batch, n_mels, n_time = batch.mel.shape

    def run(report):
        M = batch.mel.transpose(1, 0, 2).reshape(n_mels, n_batch * n_time)
        S = np.linalg.lstsq(A, M, rcond=None)[0]
        np.maximum(S, 0, out=S)
        return S.reshape(-1, n_batch, n_time).transpose(1, 0, 2), 0

    return Solve(run, cpu_model())


IMPLEMENTATIONS = (
    *(_cumel_implementation(solver) for solver in CUMEL_SOLVERS),
    Implementation("torch-sgd", "torchaudio 0.8 InverseMelScale SGD loop (PyTorch, bench/)",
                   "torch-sgd", ("torch",), DEVICE_BACKENDS, True, _module_version("torch"),
                   _prepare_torch_sgd),
    _torchaudio_implementation("gels", DEVICE_BACKENDS),
    _torchaudio_implementation("gelsd", ("cpu",)),
    Implementation("mindspore", "MindSpore dataset.audio.InverseMelScale", "mindspore",
                   ("mindspore",), ("cpu",), True, _module_version("mindspore"),
                   _prepare_mindspore),
    Implementation("librosa-nnls", "librosa.util.nnls (L-BFGS-B)", "librosa", ("librosa",),
                   ("cpu",), False, _module_version("librosa"), _prepare_librosa),
    Implementation(BASELINE, "numpy.linalg.lstsq + relu", "numpy", ("numpy",), ("cpu",), False,
                   _module_version("numpy"), _prepare_numpy_lstsq),
)
BY_ID = {impl.id: impl for impl in IMPLEMENTATIONS}


def select(solvers, peers, backends):
    """``[(implementation, backend)]`` in report order: cumel's solvers, then the peers, each on
    every requested backend it supports (numpy, the baseline, always included)."""
    peers = set(peers) | {"numpy"}
    chosen = [impl for impl in IMPLEMENTATIONS
              if (impl.peer is None and impl.id.removeprefix("cumel-") in solvers)
              or impl.peer in peers]
    return [(impl, backend) for impl in chosen for backend in backends
            if backend in impl.backends]
