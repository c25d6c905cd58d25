"""Preparing one measurement of a series of ``python -m bench gpu``: ``(run, info, timer)``.

``run()``: one timed call; ``info()``: the warm-up call, returning (result, steps per frame,
residual); ``timer``: :class:`~bench.gpu.timers.CupyTimer` or
:class:`~bench.gpu.timers.TorchTimer`. cumel's solvers, Griffin-Lim and ``mel_to_audio`` on each
backend, forward + backward of ``cumel.torch.InverseMelScale``, and the torch peers
(:data:`PREPARE`: a function per solver)."""
from __future__ import annotations

import numpy as np

from ..batches import workload_filterbank
from ..implementations import first_line
from .limits import Skip
from .timers import CupyTimer, TorchTimer


def _torch_cuda(cupy):
    """torch, if it can give CUDA tensors that this CuPy can take; else :class:`Skip`."""
    if hasattr(cupy, "cudasim"):
        raise Skip("the CUDA emulator stands in for CuPy only: no torch CUDA tensors")
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - not installed or broken: the row says so
        raise Skip(f"torch is not importable ({type(exc).__name__}: {first_line(exc)})") from None
    if not torch.cuda.is_available():
        raise Skip("torch.cuda.is_available() is False")
    return torch


def _cumel_solver(s, frames, cupy, args):
    import cumel
    w = s.workload
    fixed = {}
    if s.solver in ("torchaudio", "mindspore"):
        fixed = {"max_iter": args.max_iter, "tolerance_loss": 0.0, "tolerance_change": 0.0}
    inv = cumel.InverseMelScale(**w.inverse_kwargs(), solver=s.solver, seed=0, device="cuda",
                                **fixed)
    mel, timer = _batch(s, "mel", frames, cupy)

    def info():
        S, solve_info = inv(mel, return_info=True)
        steps = float(np.mean(np.asarray(solve_info.iterations)))
        return S, (steps if s.solver != "lstsq" else 0.0), float(solve_info.total_mel_residual)

    return (lambda: inv(mel)), info, timer


def _batch(s, kind, frames, cupy):
    """The batch of a series' backend and its timer: CuPy (``cuda``), NumPy (``cuda-host``) or
    torch CUDA tensors (``cuda-torch``)."""
    if s.backend == "cuda":
        return s.inputs.cupy(cupy, kind, frames), CupyTimer(cupy)
    if s.backend == "cuda-host":
        return s.inputs.host(kind, frames), CupyTimer(cupy)
    torch = _torch_cuda(cupy)
    return s.inputs.torch(torch, kind, frames), TorchTimer(torch)


def _griffinlim(s, frames, cupy, args):
    import cumel
    w = s.workload
    gl = cumel.GriffinLim(w.n_fft, n_iter=args.n_iter, hop_length=w.hop, seed=0, device="cuda")
    spec, timer = _batch(s, "spec", frames, cupy)

    def info():
        return gl(spec), float(args.n_iter), None

    return (lambda: gl(spec)), info, timer


def _mel_to_audio(s, frames, cupy, args):
    import cumel
    w = s.workload
    mel, timer = _batch(s, "mel", frames, cupy)

    def run():
        return cumel.mel_to_audio(mel, w.n_fft, sample_rate=w.sample_rate, hop_length=w.hop,
                                  n_iter=args.n_iter, f_min=w.f_min, f_max=w.f_max, norm=w.norm,
                                  mel_type=w.mel_scale, seed=0, device="cuda")

    return run, (lambda: (run(), float(args.n_iter), None)), timer


def _torchaudio():
    """torchaudio, or a Skip saying why it does not import."""
    try:
        import torchaudio
    except Exception as exc:  # noqa: BLE001
        raise Skip(f"torchaudio is not importable ({type(exc).__name__}: {first_line(exc)})") from None
    return torchaudio


def _torchaudio_inverse(s, frames, cupy, args):
    torch = _torch_cuda(cupy)
    torchaudio = _torchaudio()
    w = s.workload
    transform = torchaudio.transforms.InverseMelScale(
        n_stft=w.n_stft, n_mels=w.n_mels, sample_rate=w.sample_rate, f_min=w.f_min,
        f_max=w.f_max, norm=w.norm, mel_scale=w.mel_scale, driver="gels").to("cuda")
    mel = s.inputs.torch(torch, "mel", frames)

    def run():
        with torch.no_grad():
            return transform(mel)

    return run, (lambda: (run(), 0.0, None)), TorchTimer(torch)


def _torch_sgd(s, frames, cupy, args):
    torch = _torch_cuda(cupy)
    from ..torch_sgd import inverse_mel_scale_sgd
    mel = s.inputs.torch(torch, "mel", frames)
    fb = torch.from_numpy(workload_filterbank(s.workload, np.float32)).to("cuda")

    def run():
        torch.manual_seed(0)
        return inverse_mel_scale_sgd(mel, fb, max_iter=args.max_iter, tolerance_loss=0.0,
                                     tolerance_change=0.0)

    def info():
        S, iterations = run()
        return S, float(iterations), None

    return run, info, TorchTimer(torch)


def _torchaudio_griffinlim(s, frames, cupy, args):
    torch = _torch_cuda(cupy)
    torchaudio = _torchaudio()
    w = s.workload
    transform = torchaudio.transforms.GriffinLim(n_fft=w.n_fft, n_iter=args.n_iter,
                                                 hop_length=w.hop, power=2.0).to("cuda")
    spec = s.inputs.torch(torch, "spec", frames)

    def run():
        with torch.no_grad():
            return transform(spec)

    return run, (lambda: (run(), float(args.n_iter), None)), TorchTimer(torch)


def _gradient_run(torch, solve, mel):
    """``run()``: forward and backward of ``solve`` from ``mel`` (a fixed upstream gradient)."""
    with torch.no_grad():
        upstream = torch.ones_like(solve(mel))

    def run():
        leaf = mel.detach().requires_grad_()
        S = solve(leaf)
        (grad,) = torch.autograd.grad(S, leaf, upstream)
        return grad
    return run


def _cumel_torch_grad(s, frames, cupy, args):
    torch = _torch_cuda(cupy)
    import cumel.torch
    w = s.workload
    inv = cumel.torch.InverseMelScale(w.n_stft, w.n_mels, w.sample_rate, w.f_min, w.f_max,
                                      w.norm, w.mel_scale).to("cuda")
    mel = s.inputs.torch(torch, "mel", frames)
    run = _gradient_run(torch, inv, mel)

    def info():
        import cumel
        with torch.no_grad():
            _, solve_info = cumel.InverseMelScale(**w.inverse_kwargs())(mel, return_info=True)
        return (run(), float(np.mean(np.asarray(solve_info.iterations))),
                float(solve_info.total_mel_residual))

    return run, info, TorchTimer(torch)


def _torch_lstsq_grad(s, frames, cupy, args):
    torch = _torch_cuda(cupy)
    A = torch.from_numpy(workload_filterbank(s.workload, np.float32).T.copy()).to("cuda")[None]
    mel = s.inputs.torch(torch, "mel", frames)
    run = _gradient_run(torch, lambda m: torch.relu(torch.linalg.lstsq(A, m).solution), mel)
    return run, (lambda: (run(), 0.0, None)), TorchTimer(torch)


PREPARE = {"nnls": _cumel_solver, "lstsq": _cumel_solver, "torchaudio": _cumel_solver,
           "mindspore": _cumel_solver, "griffinlim": _griffinlim, "mel_to_audio": _mel_to_audio,
           "torchaudio.InverseMelScale": _torchaudio_inverse, "torch-sgd": _torch_sgd,
           "torchaudio.GriffinLim": _torchaudio_griffinlim, "nnls-grad": _cumel_torch_grad,
           "torch-lstsq-grad": _torch_lstsq_grad}
