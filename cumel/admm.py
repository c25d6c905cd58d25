"""Joint magnitude-and-phase mel inversion by ADMM: ``cumel.mel_to_audio(..., method="admm")``.

The cascade (``method="griffinlim"``) fixes a full-band magnitude first (nnls) and then looks for
phases.  Here magnitude and phase are estimated together: among the spectrograms whose mel is
``M``, the iteration looks for one that is also consistent (the STFT of a signal), so the STFT's
redundancy can choose the detail that the mel projection discarded.  The splitting is that of
Masuyama, Ueno and Ono, "Mel-spectrogram inversion via alternating direction method of
multipliers" (2025, arXiv:2501.05557): a consistent copy ``Z`` of the coefficients ``X``
and a mel-feasible copy ``W`` of the magnitudes ``Y``.  The updates below are derived here, for
cumel's mel of ``|X| ** power``; the equation numbers refer to this docstring.

Problem.  ``A = fb.T`` (n_mels, n_freqs), ``p = power``, per frame of every batch item::

    minimise   1/2 || |X| - Y ||^2 + i_C(Z) + i_Omega(W) + i_{>=0}(Y)                        (1)
    subject to Z = X,  W = Y

    C     = { STFT(y) : y a signal }                       consistent spectrograms
    Omega = { w >= 0 : A w^p = m, every frame }            magnitudes with the given mel

``X``, ``Z`` complex and ``Y``, ``W`` real, all (B, T, n_freqs) (frames-major, the FFT's layout).

Iteration (scaled ADMM, Boyd et al. 2011, "Distributed optimization and statistical learning via
the alternating direction method of multipliers", Sec. 3.1.1, eqs. 3.5-3.7; penalties ``rho`` for
``Z = X`` and ``sigma`` for ``W = Y``, scaled duals ``U`` and ``V``)::

    B = Z - U,  c = W - V                                                                     (2)
    (X, Y) = argmin 1/2 (|X| - Y)^2 + rho/2 |X - B|^2 + sigma/2 (Y - c)^2,  Y >= 0, per bin:
        Y = max(((1 + rho) sigma c + rho |B|) / (rho + sigma + rho sigma), 0)                 (3)
        X = (rho |B| + Y) / (1 + rho) * B / |B|           (X's phase is B's; |X| between the two)
    Z = argmin_{Z in C} |Z - (X + U)|^2 = STFT(ISTFT(X + U))                                 (4)
    W = argmin_{W in Omega} |W - (Y + V)|^2            the mel step, (6)                      (5)
    U <- U + X - Z,  V <- V + Y - W
    output: ISTFT(W Z / |Z|)      the mel-feasible magnitude with the consistent phase        (7)

(3) is exact: for a fixed ``|X| = r`` the phase of ``B`` is best, and the remaining quadratic in
``(r, Y)`` has the stationary point above, with ``r >= 0`` whenever ``Y >= 0``.  Only ``X + U``
and ``Y + V`` are carried between iterations: ``U = (X + U) - Z`` and ``V = (Y + V) - W`` are
recovered from them, so one pass over the bins (``kernels/admm.cu`` on the GPU) does the dual
update, (2), (3) and the mel step's inputs.

The mel step (6).  (5) is the projection of ``b = max(Y + V, 0)`` onto ``Omega``.  In the power
domain ``P = W^p`` the set is convex (``A P = m``, ``P >= 0``), and ``|w - b|^2`` is, to first
order around ``w = b``, ``(P - b^p)^2 / (p b^(p-1))^2``: a weighted projection in ``P`` with centre
``b^p`` and spread ``b^(2(p-1))``, which is exactly the nnls problem with a prior
(``cumel.solvers.nnls``, "Prior"; exact for ``p = 1``)::

    P = argmin_{P >= 0} 1/2 ||A P - m||^2 + eps/2 sum_j (P_j - b_j^p)^2 / v_j,
        v_j = b_j^(2(p-1)) / max_j b_j^(2(p-1)) + WEIGHT_FLOOR                               (6)
    W = P^(1/p)

solved per frame by the dual Newton iteration of nnls (tridiagonal ``A diag(v) A.T``):
``inner_steps = 0`` takes its start ``mu_0``, the weighted projection onto ``A P = m`` clamped at
0 (one tridiagonal solve a frame); ``k > 0`` adds up to ``k`` semismooth Newton steps towards the
exact non-negative answer.  ``WEIGHT_FLOOR`` keeps bins with ``b = 0`` free to take energy.

Start (the cascade's answer): ``S`` = nnls inverse mel scale, ``W_0 = S^(1/p)``, ``X_GL`` =
``start_iter`` fast Griffin-Lim iterations on ``W_0`` from :meth:`GriffinLim.start` (the seed gives
the same start on NumPy and CuPy), ``Z_0 = STFT(ISTFT(X_GL))``, ``U_0 = 0``, ``V_0 = 0``.

(7) is the signal nearest (least squares) to the two halves of the answer; measured on the tuning
clips it is 0.1-1.2% below ``ISTFT(Z)`` in spectral convergence, at the cost of one ISTFT.

Stopping: ``n_iter`` outer iterations, no other rule (like Griffin-Lim; the spectral convergence
against the original is what matters and it has no in-loop estimate).  Measured on the standard
workloads by ``python -m bench audio`` (its ``--admm-iters`` rows), see the README.

Cost per iteration: one ISTFT + STFT (as a Griffin-Lim iteration), one pass over the bins for
(2)-(3) (about twenty NumPy operations), and the mel step (one tridiagonal solve a frame plus
about thirty NumPy passes over the bins at ``inner_steps=0``; one warp a frame on the GPU):
two to three Griffin-Lim iterations on the CPU.
"""
from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _progress, _threads
from ._typing import Array, ArrayModule
from .solvers import nnls as _nnls

if TYPE_CHECKING:
    from .griffin_lim import GriffinLim
    from .transforms import InverseMelScale

__all__ = ["DEFAULTS", "run"]

# Measured defaults (tuned on speech_00-03 and music_00 of the standard workloads; the figures
# in the README are on speech_04-07 and music_01). rho and sigma: see default_penalties.
DEFAULTS = {"n_iter": 32, "inner_steps": 0, "start_iter": 32}
RHO_SCALE = 0.75           # rho = RHO_SCALE (n_mels / n_freqs)^2, clipped to RHO_RANGE
RHO_RANGE = (0.005, 1.0)
SIGMA_PER_RHO = 10.0       # sigma = SIGMA_PER_RHO rho
WEIGHT_FLOOR = 1e-5        # v_j floor in (6), relative to the frame's largest spread
MEL_TOLERANCE = 1e-6       # the mel step's relative KKT tolerance (inner_steps > 0)
EPS = 1e-16                # the phase guard of Griffin-Lim: B / (|B| + 1e-16)


def default_penalties(n_mels: int, n_freqs: int) -> tuple[float, float]:
    """``(rho, sigma)`` for a filterbank of ``n_mels`` triangles over ``n_freqs`` bins.

    Measured: the fewer mels a bin, the smaller the best ``rho`` (the magnitude is then less
    determined by the mel and ``|X|`` should follow the mel-feasible ``Y`` more than the
    consistent ``|Z|``). Over ``rho`` in 0.003-1 and ``sigma`` in 0.03-10 on the tuning clips,
    the best were about 0.02 / 0.2 at 80 mels over 513 bins, 0.01-0.03 / 0.1-0.3 at 128 over
    1025, 0.3 / 3 at 128 over 201: ``rho = 0.75 (n_mels / n_freqs)^2``, ``sigma = 10 rho``.
    """
    rho = min(max(RHO_SCALE * (n_mels / n_freqs) ** 2, RHO_RANGE[0]), RHO_RANGE[1])
    return rho, SIGMA_PER_RHO * rho


def check_settings(n_iter: int | None, rho: float | None, sigma: float | None,
                   inner_steps: int | None, start_iter: int | None, n_mels: int,
                   n_freqs: int) -> dict[str, Any]:
    """The ADMM settings with defaults filled in; a ValueError names a bad one.

    ``rho`` None: :func:`default_penalties`; ``sigma`` None: ``SIGMA_PER_RHO * rho``."""
    out: dict[str, Any] = {}
    value: Any                    # an integer setting, then a penalty: checked below
    for name, value in (("n_iter", n_iter), ("inner_steps", inner_steps),
                        ("start_iter", start_iter)):
        value = DEFAULTS[name] if value is None else value
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        out[name] = int(value)
    for name, value in (("rho", rho), ("sigma", sigma)):
        if value is None:
            continue
        ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
              and np.isfinite(float(value)) and float(value) > 0)
        if not ok:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        out[name] = float(value)
    if "rho" not in out:
        out["rho"] = default_penalties(n_mels, n_freqs)[0]
    if "sigma" not in out:
        out["sigma"] = SIGMA_PER_RHO * out["rho"]
    return out


def run(gl: GriffinLim, inverse: InverseMelScale, mel: Array, S: Array, settings: dict[str, Any],
        xp: ArrayModule, workers: int | None = None) -> Array:
    """The iteration of the module docstring.

    Parameters
    ----------
    gl : cumel.GriffinLim
        STFT parameters, ``power``, ``momentum`` and ``length`` of the output, and the seeded
        start of the Griffin-Lim phases.
    inverse : cumel.InverseMelScale
        Its plan (the filterbank and the nnls constants).
    mel : array, shape (..., n_mels, T)
        On ``xp``; not modified.
    S : array, shape (..., n_freqs, T)
        ``inverse(mel)``, the nnls power (or magnitude) spectrogram, on ``xp``.
    settings : dict
        :func:`check_settings`' output.
    xp : module
        numpy or cupy.
    workers : int or None
        Threads of the NumPy mel step (nnls chunks); None: ``inverse.workers``, whose None is
        every usable core.

    Returns
    -------
    array, shape (..., length): float64 for float64 ``S``, else float32.
    """
    prepared = gl.magnitudes(xp, S)
    lead = tuple(S.shape[:-2])
    if prepared is None:
        return xp.zeros(lead + (gl._n_out(S.shape[-1]),), gl._real(S))
    mag, lead, n_out = prepared
    B, T, F = mag.shape
    real = mag.dtype
    n_mels = mel.shape[-2]
    packed = mel.reshape((B, n_mels, T)).astype(real, copy=False)
    inner = gl.inner_length(T, n_out, settings["n_iter"] + settings["start_iter"])
    P = xp.ascontiguousarray(xp.swapaxes(S.reshape((B, F, T)), 1, 2)).astype(real, copy=True)
    center = xp.empty_like(P)
    spread = center if gl.power == 2.0 else xp.empty_like(P)
    if workers is None:
        # threads pay for their start only on big batches: one a CHUNK_ELEMENTS of bins
        workers = _threads.resolve_workers(getattr(inverse, "workers", None))
        workers = max(1, min(workers, (B * T * F) // _nnls.CHUNK_ELEMENTS))
    step = _MelStep(inverse, packed, P, center, spread, settings["inner_steps"], xp, workers)
    work: dict[str, Any] = {}              # update's scratch arrays, kept between iterations
    total = settings["start_iter"] + settings["n_iter"]
    # the NumPy FFTs on GriffinLim's threads (gl.workers), as in the cascade
    with gl.runner(xp, mag.shape) as runner, \
            _progress.bar(gl.progress, total, "it", "cumel admm") as tell:
        run = runner if runner.workers > 1 else None
        # start: the cascade's answer (module docstring, "Start"); C order for the fused pass
        # (the FFT of a gathered frame array need not be)
        X = gl.phases(xp, mag, settings["start_iter"], inner, run, tell)
        Z = xp.ascontiguousarray(gl.stft(gl.istft(X, inner, xp, run), xp, run))
        XU = Z.copy()                      # X + U, with U_0 = 0
        b = mag                            # Y + V, with V_0 = 0 (W_0 = mag)
        for _ in range(settings["n_iter"]):
            update(Z, XU, P, b, center, spread, settings["rho"], settings["sigma"], gl.power,
                   xp, work)
            Z = xp.ascontiguousarray(gl.stft(gl.istft(XU, inner, xp, run), xp, run))   # (4)
            step()                                                      # (5), (6): P
            if tell is not None:
                tell(1)
        y = gl.istft(output_coefficients(Z, P, gl.power, xp), n_out, xp, run)
    return y.reshape(lead + (n_out,))


def output_coefficients(Z: Array, P: Array, power: float, xp: ArrayModule) -> Array:
    """(7): ``W Z / (|Z| + 1e-16)`` with ``W = P^(1/power)`` (a new array)."""
    W = xp.sqrt(P) if power == 2.0 else (P if power == 1.0 else P ** (1.0 / power))
    real = P.dtype.type
    return Z * (W / (xp.abs(Z) + real(EPS)))


def update(Z: Array, XU: Array, P: Array, b: Array, center: Array, spread: Array, rho: float,
           sigma: float, power: float, xp: ArrayModule, work: dict[str, Any] | None = None) -> None:
    """The duals, (2), (3) and the mel step's inputs, in one pass over the bins.

    Reads ``Z`` and ``P``; ``XU`` (``X + U`` in, the new ``X + U`` out) and ``b`` (``Y + V`` in,
    the new one out) are updated in place; ``center`` and ``spread`` (may be one array when
    ``power == 2``) receive ``max(b, 0) ** power`` and ``max(b, 0) ** (2 (power - 1))``.
    All (B, T, F), C-contiguous; complex ``Z``, ``XU``, real the rest. ``work`` (NumPy): a dict
    that keeps the three scratch arrays between calls (None: fresh ones).
    """
    if xp is not np:
        from . import cuda
        return cuda.admm_update(Z, XU, P, b, center, spread, rho, sigma, power)
    real = P.dtype.type
    work = {} if work is None else work
    if work.get("shape") != (P.shape, P.dtype):     # allocated once, reused every iteration
        work.update(shape=(P.shape, P.dtype), B=np.empty_like(Z), W=np.empty_like(P),
                    beta=np.empty_like(P))
    W, Bc, beta = work["W"], work["B"], work["beta"]
    if power == 2.0:
        np.sqrt(P, out=W)
    elif power == 1.0:
        np.copyto(W, P)
    else:
        np.power(P, real(1.0 / power), out=W)
    XU -= Z                                        # U = (X + U) - Z
    np.subtract(Z, XU, out=Bc)                     # B = Z - U
    np.abs(Bc, out=beta)
    b -= W                                         # V = (Y + V) - W
    c = np.subtract(W, b, out=W)                   # c = W - V
    det = rho + sigma + rho * sigma
    c *= real((1.0 + rho) * sigma / det)
    tmp = np.multiply(beta, real(rho / det), out=center)     # center: scratch until the end
    c += tmp
    Y = np.maximum(c, 0, out=c)                    # (3)
    scale = np.multiply(beta, real(rho), out=center)   # r / |B| = (rho |B| + Y) / ((1 + rho) |B|)
    scale += Y
    beta += real(EPS)
    beta *= real(1.0 + rho)
    scale /= beta
    Bc *= scale                                    # X
    XU += Bc                                       # X + U
    b += Y                                         # Y + V
    if power == 2.0:
        np.maximum(b, 0, out=center)
        center *= center
    else:
        bp = np.maximum(b, 0, out=W)
        np.power(bp, real(2.0 * (power - 1.0)), out=spread)
        np.power(bp, real(power), out=center)


class _MelStep:
    """(6) in place: ``P`` (B, T, F) <- the prior-nnls answer for ``center`` and ``spread``."""

    def __init__(self, inverse, packed, P, center, spread, inner_steps, xp, workers):
        self.inverse, self.packed, self.P = inverse, packed, P
        self.center, self.spread = center, spread
        self.inner_steps, self.xp, self.workers = inner_steps, xp, workers
        self.scratch = {}             # nnls work arrays, kept from one iteration to the next

    def __call__(self):
        t = (0, 2, 1)         # (B, T, F) arrays seen as (B, F, T): frames as columns
        P, center, spread = (a.transpose(t) for a in (self.P, self.center, self.spread))
        if self.xp is not np:
            from . import cuda
            cuda.nnls_prior(self.inverse, self.packed, P, center, spread, WEIGHT_FLOOR,
                            self.inner_steps, MEL_TOLERANCE)
            return
        with np.errstate(over="ignore", invalid="ignore"):
            _nnls.solve_into(self.inverse.plan.nnls(), self.packed, P,
                             max_iter=self.inner_steps, tolerance_loss=MEL_TOLERANCE,
                             tolerance_change=1e-12, workers=self.workers,
                             prior=_nnls.Prior(center, spread, WEIGHT_FLOOR),
                             scratch=self.scratch)
