"""Argument checking shared by every entry point: one place, one wording.

Every error names the parameter and the value it got.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

SOLVERS = ("nnls", "lstsq", "torchaudio", "mindspore")

# torch.optim.SGD keys (torchaudio 0.8) and MindSpore's spellings.
_TORCH_SGD_KEYS = ("lr", "momentum", "dampening", "nesterov", "weight_decay")
_MS_SGD_KEYS = {"sgd_lr": "lr", "sgd_momentum": "momentum"}


def _enum_name(value):
    """'NormType.SLANEY' / MelType.HTK objects / plain strings -> lower-case name."""
    name = getattr(value, "name", value)
    if not isinstance(name, str):
        return None
    return name.rsplit(".", 1)[-1].strip().lower()


def canonical_norm(norm):
    """``None``/"none"/NormType.NONE -> None, "slaney"/NormType.SLANEY -> "slaney"."""
    if norm is None:
        return None
    name = _enum_name(norm)
    if name == "none":
        return None
    if name == "slaney":
        return "slaney"
    raise ValueError(f"norm must be None, 'none' or 'slaney', got {norm!r}")


def canonical_mel_scale(mel_type, param="mel_type"):
    """"htk"/"slaney" in any case, or MindSpore MelType members."""
    name = _enum_name(mel_type)
    if name in ("htk", "slaney"):
        return name
    raise ValueError(f"{param} must be 'htk' or 'slaney', got {mel_type!r}")


def canonical_solver(solver):
    name = solver.lower() if isinstance(solver, str) else None
    if name not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    return name


def _is_int(x):
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def check_positive_int(value, name):
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_filterbank_args(n_freqs, n_mels, sample_rate, f_min, f_max):
    check_positive_int(n_freqs, "n_stft")
    check_positive_int(n_mels, "n_mels")
    check_positive_int(sample_rate, "sample_rate")
    if not _is_real(f_min) or not math.isfinite(f_min) or f_min < 0:
        raise ValueError(f"f_min must be a finite frequency >= 0 Hz, got {f_min!r}")
    if not _is_real(f_max) or not math.isfinite(f_max):
        raise ValueError(f"f_max must be a finite frequency in Hz, got {f_max!r}")
    if f_min >= f_max:
        raise ValueError(f"f_min must be below f_max, got f_min={f_min!r} and f_max={f_max!r}")
    if f_max > sample_rate / 2:
        raise ValueError(f"f_max must not exceed sample_rate / 2 = {sample_rate / 2}, got {f_max!r}")


def resolve_f_max(f_max, sample_rate):
    """``None`` means ``float(sample_rate // 2)`` as in torchaudio and MindSpore."""
    return float(sample_rate // 2) if f_max is None else f_max


def check_tolerance(value, name):
    if not _is_real(value) or math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def check_seed(seed):
    if seed is None:
        return None
    if not _is_int(seed) or not 0 <= seed < 2 ** 32:
        raise ValueError(f"seed must be None or an integer in [0, 2**32), got {seed!r}")
    return int(seed)


def canonical_sgdargs(sgdargs, solver):
    """Normalise ``sgdargs`` to torch.optim.SGD's keys.

    torchaudio 0.8 passes its dict straight to ``torch.optim.SGD``, so a dict replaces the
    default ``{"lr": 0.1, "momentum": 0.9}`` as a whole and missing keys take torch's defaults
    (momentum 0, dampening 0, nesterov False, weight_decay 0); torch 0.8 had no default for
    ``lr``, and we keep torchaudio's 0.1. MindSpore's ``sgd_lr``/``sgd_momentum`` each default
    to 0.1 and 0.9 on their own.
    """
    if sgdargs is None:
        return {"lr": 0.1, "momentum": 0.9, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0}
    if solver in ("nnls", "lstsq"):
        raise ValueError(f"sgdargs={sgdargs!r} only applies to the SGD solvers "
                         f"(solver='torchaudio' or 'mindspore'), not solver={solver!r}")
    if not isinstance(sgdargs, dict):
        raise ValueError(f"sgdargs must be a dict or None, got {sgdargs!r}")
    unknown = [k for k in sgdargs if k not in _TORCH_SGD_KEYS and k not in _MS_SGD_KEYS]
    if unknown:
        raise ValueError(f"sgdargs has unknown key(s) {unknown}; known keys are "
                         f"{list(_TORCH_SGD_KEYS) + list(_MS_SGD_KEYS)}")
    mindspore_style = any(k in _MS_SGD_KEYS for k in sgdargs)
    if mindspore_style and any(k in _TORCH_SGD_KEYS for k in sgdargs):
        raise ValueError(f"sgdargs mixes torchaudio keys and MindSpore keys: {sgdargs!r}")
    if mindspore_style:
        out = {"lr": 0.1, "momentum": 0.9, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0}
        out.update({_MS_SGD_KEYS[k]: v for k, v in sgdargs.items()})
    else:
        out = {"lr": 0.1, "momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0}
        out.update(sgdargs)
    for key in ("lr", "momentum", "dampening", "weight_decay"):
        v = out[key]
        if not _is_real(v) or not math.isfinite(v) or v < 0:
            raise ValueError(f"sgdargs[{key!r}] must be a finite number >= 0, got {v!r}")
        out[key] = float(v)
    if out["lr"] == 0:
        raise ValueError(f"sgdargs['lr'] must be > 0, got {out['lr']!r}")
    out["nesterov"] = bool(out["nesterov"])
    if out["nesterov"] and (out["momentum"] <= 0 or out["dampening"] != 0):
        raise ValueError("sgdargs['nesterov']=True requires momentum > 0 and zero dampening "
                         f"(torch.optim.SGD), got {sgdargs!r}")
    return out


def check_mel_input(mel, n_mels, xp):
    """Validate a mel spectrogram of shape (..., n_mels, time); returns it unchanged."""
    if mel.ndim < 2:
        raise ValueError(f"mel must have at least 2 dims (..., n_mels, time), got shape {tuple(mel.shape)}")
    if mel.dtype.kind not in "fiu" or mel.dtype == np.bool_:
        raise TypeError(f"mel must hold real numbers, got dtype {mel.dtype}")
    if mel.shape[-2] != n_mels:
        raise ValueError(f"mel.shape[-2] must equal n_mels={n_mels}, got mel of shape {tuple(mel.shape)}")
    if mel.dtype.kind == "f" and mel.size and not bool(xp.isfinite(mel).all()):
        raise ValueError("mel contains NaN or Inf values")
    return mel


COMPRESSED_SHARE = 0.10    # this share of negative values or more: a log or dB mel, not a linear one


def negative_share(mel, xp):
    """Share of ``mel``'s values below zero, counted a few million at a time (no mask as large
    as the input)."""
    if mel.size == 0:
        return 0.0
    flat = mel.reshape(-1)
    step = 1 << 22
    count = sum(int(xp.count_nonzero(flat[i:i + step] < 0)) for i in range(0, flat.size, step))
    return count / flat.size


def percent(share):
    """``share`` (0 to 1) as a percentage with one decimal that never rounds to a bound it has
    not reached: 0.996 is "99.6%", 0.99996 "99.9%" (not "100.0%"), 0.00004 "0.1%"."""
    tenths = share * 1000.0
    if 0 < share < 1:
        tenths = min(max(round(tenths), 1), 999)
    else:
        tenths = round(tenths)
    return f"{tenths / 10:.1f}%"


def warn_if_compressed(mel, xp, stacklevel=3):
    """A ``UserWarning`` when 10 % or more of a mel taken as linear are negative: a power or
    magnitude mel has none; a log or dB mel (Whisper, HiFi-GAN, ``power_to_db``) has many."""
    share = negative_share(mel, xp)
    if share >= COMPRESSED_SHARE:
        import warnings
        warnings.warn(f"mel: {percent(share)} of its values are negative, but it is taken as a linear "
                      "(power or magnitude) mel: this looks like a log or dB mel; pass frontend= "
                      "(cumel.frontends() lists the presets) or undo the compression first",
                      UserWarning, stacklevel=stacklevel + 1)
    return share


def check_out(out, shape, dtype, mel, xp):
    """``out=`` must match the result exactly and must not overlap the input."""
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"out must have shape {tuple(shape)} and dtype {np.dtype(dtype)}, got "
                         f"shape {tuple(out.shape)} and dtype {out.dtype}")
    if xp is np and not out.flags.writeable:
        raise ValueError("out must be writeable, got a read-only array")
    if xp.may_share_memory(out, mel):
        raise ValueError("out must not overlap mel (the input is read while out is written)")
