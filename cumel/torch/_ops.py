"""The custom operators behind :mod:`cumel.torch`, registered with ``torch.library``.

``cumel::inverse_mel_scale(mel, fb, config) -> S``
    The solve of :class:`cumel.InverseMelScale`: ``config`` (a JSON string of the transform's
    arguments) names the transform, ``fb`` (n_stft, n_mels) is the filterbank tensor the module
    holds. Where ``fb`` equals the transform's filterbank (in float32, as torchaudio keeps it) the
    transform's own plan solves, so the result is :class:`cumel.InverseMelScale`'s bit for bit;
    a filterbank that was changed (a ``state_dict`` loaded from elsewhere) is used as given.
    CPU tensors go through NumPy, CUDA tensors through CuPy on torch's current stream (DLPack,
    no copy): the result is on the input's device.
``cumel::inverse_mel_scale_backward(grad, S, fb, config) -> dL/dmel``
    Its gradient (:mod:`cumel.solvers.gradient`): nnls by implicit differentiation, one
    tridiagonal solve a frame (``kernels/nnls.cu``'s ``nnls_backward`` on CUDA); lstsq its
    adjoint. Registered as the forward's autograd formula.

Both have fake (meta) implementations, so a model holding them compiles with
``torch.compile(fullgraph=True)`` and traces with ``torch.export``. A solver without a gradient
("torchaudio", "mindspore") raises :class:`cumel.NoGradientError` when one is asked for, as does
a filterbank that requires grad.
"""
from __future__ import annotations

import functools
import json
import threading

import numpy as np
import torch

from .. import _backend, _threads
from ..solvers import gradient as _gradient

DIFFERENTIABLE = ("nnls", "lstsq")
NO_GRADIENT_INSTEAD = "solver='nnls' or solver='lstsq', which have one"

_TRANSFORMS: dict = {}      # config (and filterbank digest) -> cumel.InverseMelScale, this process
_LOCK = threading.Lock()


def config_of(transform):
    """The ``config`` string of a :class:`cumel.InverseMelScale` (registered for this process):
    JSON of its constructor arguments, the filterbank's digest for a matrix of the caller's."""
    cached = transform.__dict__.get("_torch_config")
    if cached is not None:
        return cached
    key = transform.key
    cfg = {"n_stft": transform.n_stft, "n_mels": transform.n_mels, "solver": transform.solver,
           "max_iter": transform.max_iter, "tolerance_loss": transform.tolerance_loss,
           "tolerance_change": transform.tolerance_change, "seed": transform.seed,
           "workers": transform.workers}
    if transform.solver in ("torchaudio", "mindspore"):
        cfg["sgdargs"] = dict(transform.sgdargs)
    if len(key) == 1:
        cfg["fb"] = key[0].digest
    else:
        cfg.update(f_min=key[1], f_max=key[2], sample_rate=key[4], norm=key[5], mel_type=key[6])
    text = json.dumps(cfg, sort_keys=True)
    with _LOCK:
        _TRANSFORMS.setdefault(text, transform)
    transform.__dict__["_torch_config"] = text
    return text


def _transform_of_config(config, fb):
    """The registered transform of ``config``, or one rebuilt from it (a program exported in
    another process): a caller's filterbank is then taken from ``fb``."""
    transform = _TRANSFORMS.get(config)
    if transform is not None:
        return transform
    from ..transforms import InverseMelScale
    cfg = json.loads(config)
    kwargs = {k: cfg[k] for k in ("max_iter", "tolerance_loss", "tolerance_change")}
    kwargs.update(solver=cfg["solver"], seed=cfg["seed"], workers=cfg["workers"],
                  sgdargs=cfg.get("sgdargs"))
    if "fb" in cfg:
        transform = InverseMelScale(cfg["n_stft"], cfg["n_mels"], fb=_fb_numpy(fb), **kwargs)
    else:
        transform = InverseMelScale(cfg["n_stft"], cfg["n_mels"], cfg["sample_rate"],
                                    cfg["f_min"], cfg["f_max"], norm=cfg["norm"],
                                    mel_type=cfg["mel_type"], **kwargs)
    with _LOCK:
        return _TRANSFORMS.setdefault(config, transform)


def _fb_numpy(fb):
    return fb.detach().to("cpu", torch.float64).numpy()


def reference_fb(transform, device, dtype=torch.float32):
    """The transform's filterbank as a tensor (float32 values, torchaudio's buffer), cached on
    its plan per device and dtype."""
    device = torch.device(device)
    return transform.plan.cached(
        ("torch-fb", str(device), str(dtype)),
        lambda: torch.from_numpy(transform.plan.fb(np.float32).copy()).to(device, dtype))


def transform_for(config, fb):
    """The transform that solves ``config`` with the filterbank tensor ``fb``."""
    transform = _transform_of_config(config, fb)
    ref = reference_fb(transform, fb.device, fb.dtype)
    if fb.shape == ref.shape and torch.equal(fb.detach(), ref):
        return transform
    # a filterbank changed since the module was built: solve with it as given (plans are shared
    # by bit-equal matrices, see cumel.filterbank.UserFilterbank)
    from ..filterbank import UserFilterbank
    from ..transforms import InverseMelScale
    user = UserFilterbank.from_matrix(_fb_numpy(fb), transform.n_stft, transform.n_mels)
    with _LOCK:
        own = _TRANSFORMS.get((config, user.digest))
        if own is None:
            own = _TRANSFORMS[(config, user.digest)] = InverseMelScale(
                transform.n_stft, transform.n_mels, max_iter=transform.max_iter,
                tolerance_loss=transform.tolerance_loss,
                tolerance_change=transform.tolerance_change, solver=transform.solver,
                seed=transform.seed, workers=transform.workers, fb=user,
                **({"sgdargs": transform.sgdargs} if "sgdargs" in json.loads(config) else {}))
    return own


def _out_shape(mel_shape, n_stft, solver):
    lead = tuple(mel_shape[:-2])
    if not lead and solver == "mindspore":
        lead = (1,)
    return lead + (n_stft, mel_shape[-1])


@functools.lru_cache(maxsize=256)
def _solver_of(config):
    return json.loads(config)["solver"]


# -- the forward ----------------------------------------------------------------------------------

@torch.library.custom_op("cumel::inverse_mel_scale", mutates_args=())
def inverse_mel_scale(mel: torch.Tensor, fb: torch.Tensor, config: str) -> torch.Tensor:
    """``S`` (..., n_stft, T) of ``mel`` (..., n_mels, T), float32 or float64."""
    transform = transform_for(config, fb)
    return transform._values(mel)


@inverse_mel_scale.register_fake
def _(mel, fb, config):
    shape = _out_shape(mel.shape, fb.shape[0], _solver_of(config))
    return mel.new_empty(shape, dtype=mel.dtype)


# -- the backward ---------------------------------------------------------------------------------

@torch.library.custom_op("cumel::inverse_mel_scale_backward", mutates_args=())
def inverse_mel_scale_backward(grad: torch.Tensor, answer: torch.Tensor, fb: torch.Tensor,
                               config: str, layout: list[int]) -> torch.Tensor:
    """``dL/dmel`` (..., n_mels, T) of the answer (..., n_stft, T) for ``dL/dS = grad``, with the
    strides ``layout`` (the mel's own, as autograd's gradients have: a gradient laid out
    otherwise than its input trips some of torch's compiled backward formulas)."""
    transform = transform_for(config, fb)
    if transform.solver not in DIFFERENTIABLE:
        raise _backend.no_gradient("mel", f"solver={transform.solver!r}", NO_GRADIENT_INSTEAD)
    lead, T = tuple(answer.shape[:-2]), answer.shape[-1]
    n_stft, n_mels = transform.n_stft, transform.n_mels
    grad = grad.to(answer.dtype)
    with _backend.foreign_scope(answer, "answer") as (S, back), \
            _backend.foreign_scope(grad, "grad") as (G, _):
        S, G = S.reshape((-1, n_stft, T)), G.reshape((-1, n_stft, T))
        if transform.solver == "nnls":
            out = _gradient.nnls_backward(transform.plan, S, G,
                                          workers=_threads.resolve_workers(transform.workers))
        else:
            out = _gradient.lstsq_backward(transform.plan, S, G)
        result = back(out.reshape(lead + (n_mels, T)))
    if tuple(result.stride()) == tuple(layout):
        return result
    return torch.empty_strided(result.shape, layout, dtype=result.dtype,
                               device=result.device).copy_(result)


@inverse_mel_scale_backward.register_fake
def _(grad, answer, fb, config, layout):
    shape = tuple(answer.shape[:-2]) + (fb.shape[1], answer.shape[-1])
    return torch.empty_strided(shape, layout, dtype=answer.dtype, device=answer.device)


def _setup_context(ctx, inputs, output):
    mel, fb, config = inputs
    ctx.config = config
    # the mel's strides where they are dense (torch.empty_like's rule), else C order
    ctx.layout = list(torch.empty_like(mel, device="meta").stride())
    ctx.save_for_backward(output, fb)


def _backward(ctx, grad):
    answer, fb = ctx.saved_tensors
    if ctx.needs_input_grad[1]:
        raise _backend.no_gradient("fb", "cumel's inverse with respect to its filterbank")
    return inverse_mel_scale_backward(grad, answer, fb, ctx.config, ctx.layout), None, None


torch.library.register_autograd("cumel::inverse_mel_scale", _backward,
                                setup_context=_setup_context)


# -- the call -------------------------------------------------------------------------------------

def check_mel(mel, n_mels, name="melspec"):
    """The checks of every entry point, traceable by ``torch.compile`` (no data read)."""
    if not isinstance(mel, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mel).__name__}")
    if mel.is_complex() or not mel.is_floating_point():
        raise TypeError(f"{name} must be a real floating-point tensor, got dtype {mel.dtype}")
    if mel.dim() < 2 or mel.shape[-2] != n_mels:
        raise ValueError(f"Expected an input with {n_mels} mel bins. Found: "
                         f"{mel.shape[-2] if mel.dim() >= 2 else None} ({name} of shape "
                         f"{tuple(mel.shape)}, expected (..., {n_mels}, time))")


def apply(mel, fb, config, n_mels, solver, name="melspec"):
    """Check the arguments and run ``cumel::inverse_mel_scale``: what the modules, the
    functional form and :class:`cumel.InverseMelScale` (given a tensor that requires grad) call.
    float16 and bfloat16 are solved in float32 and cast back."""
    check_mel(mel, n_mels, name)
    if not isinstance(fb, torch.Tensor) or fb.dim() != 2 or fb.shape[1] != n_mels:
        raise ValueError(f"fb must be a (n_stft, {n_mels}) tensor, got "
                         f"{tuple(getattr(fb, 'shape', ()))}")
    if fb.device != mel.device:
        raise ValueError(f"{name} is on {mel.device} but fb is on {fb.device}: move the module "
                         f"(.to({str(mel.device)!r})) or the input")
    if fb.requires_grad and torch.is_grad_enabled():
        raise _backend.no_gradient("fb", "cumel's inverse with respect to its filterbank")
    if solver not in DIFFERENTIABLE and mel.requires_grad and torch.is_grad_enabled():
        raise _backend.no_gradient(name, f"solver={solver!r}", NO_GRADIENT_INSTEAD)
    if mel.dtype in (torch.float32, torch.float64):
        return torch.ops.cumel.inverse_mel_scale(mel, fb, config)
    return torch.ops.cumel.inverse_mel_scale(mel.to(torch.float32), fb, config).to(mel.dtype)


def call_transform(transform, mel, *, out=None, return_info=False):
    """:class:`cumel.InverseMelScale` on a tensor that requires grad: the answer with a gradient
    (nnls, lstsq), or a clear error."""
    if transform.solver not in DIFFERENTIABLE:
        raise _backend.no_gradient("mel", f"solver={transform.solver!r}", NO_GRADIENT_INSTEAD)
    if out is not None:
        raise ValueError("out= cannot take the result when mel requires grad (autograd needs a "
                         "tensor of its own): drop out=, or pass mel.detach()")
    if return_info:
        raise ValueError("return_info=True is not available when mel requires grad: call again "
                         "with mel.detach() (or under torch.no_grad()) for the diagnostics")
    fb = reference_fb(transform, mel.device)
    return apply(mel, fb, config_of(transform), transform.n_mels, transform.solver, "mel")
