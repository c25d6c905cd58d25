"""``python -m bench --mel-sweep``: cumel nnls frames/s against the number of mels.

nnls keeps one frame's whole state in shared memory (``cumel.cuda.nnls_shared_bytes``: 7 (n_mels
+ 1) + n_stft / 32 doubles a warp), so the warps a block (and an SM) holds fall as n_mels grows,
and past 48 KB a block the kernel opts in to the device's maximum. This table makes that cliff
visible: one row per n_mels in :data:`MEL_COUNTS` and backend, with the per-warp bytes and the
warps per block the launch uses. Without a GPU the cuda rows say "skipped: no GPU".
"""
from __future__ import annotations

import numpy as np

from .implementations import Solve, Unavailable, _cupy_backend, first_line
from .measure import time_solve

MEL_COUNTS = (64, 128, 256, 512)
N_STFT, SAMPLE_RATE = 1025, 44100
BACKENDS = ("cpu", "cuda")


def synthetic_mel(n_mels, frames, seed=0):
    """(1, n_mels, frames) float32 mel spectrogram of a random sparse non-negative spectrum."""
    import cumel
    fb = cumel.InverseMelScale(N_STFT, n_mels, SAMPLE_RATE).plan.fb64
    rng = np.random.default_rng(seed)
    S = rng.random((N_STFT, frames)) * (rng.random((N_STFT, 1)) < 0.5)
    return np.matmul(fb.T, S).astype(np.float32)[None]


def _layout(n_mels):
    from cumel import cuda
    per_warp = cuda.nnls_shared_bytes(n_mels, N_STFT, 1)
    if cuda.WARPS_PER_BLOCK * per_warp + cuda.STATIC_SHARED <= cuda.SHARED_LIMIT:
        return per_warp, cuda.WARPS_PER_BLOCK
    return per_warp, None          # opt-in: the count depends on the device's maximum


def _prepare(n_mels, mel, backend):
    import cumel
    inv = cumel.InverseMelScale(N_STFT, n_mels, SAMPLE_RATE,
                                device="cpu" if backend == "cpu" else "cuda")
    if backend == "cpu":
        return Solve(lambda report: (inv(mel), None), "cpu")
    try:
        cupy, name = _cupy_backend()
    except Unavailable as exc:
        raise Unavailable(f"no GPU ({exc})") from None
    mel_dev = cupy.asarray(mel)
    return Solve(lambda report: (inv(mel_dev), None), name,
                 cupy.cuda.get_current_stream().synchronize, cupy.asnumpy)


def sweep(backends, frames, repeats, log=None):
    """Rows ``{n_mels, n_stft, backend, device, status, error, frames, seconds,
    frames_per_second, shared_bytes_per_warp, warps_per_block}`` for every n_mels and backend."""
    rows = []
    for n_mels in MEL_COUNTS:
        mel = synthetic_mel(n_mels, frames)
        per_warp, warps = _layout(n_mels)
        for backend in (b for b in backends if b in BACKENDS):
            row = dict(n_mels=n_mels, n_stft=N_STFT, backend=backend, device=None, status="ok",
                       error=None, frames=frames, seconds=None, frames_per_second=None,
                       shared_bytes_per_warp=per_warp, warps_per_block=warps)
            try:
                solve = _prepare(n_mels, mel, backend)
                row["device"] = solve.device
                timing = time_solve(solve, repeats)
                row.update(seconds=timing.median, frames_per_second=frames / timing.median)
            except Unavailable as exc:
                row.update(status="skipped", error=str(exc))
            except Exception as exc:
                row.update(status="error", error=f"{type(exc).__name__}: {first_line(exc)}")
            if log is not None:
                log(f"[mel-sweep] nnls n_mels={n_mels} ({backend}): {row['status']}"
                    + (f", {row['frames_per_second']:,.0f} frames/s" if row["status"] == "ok"
                       else f": {row['error']}"))
            rows.append(row)
    return rows


def markdown_lines(rows):
    """The sweep as a Markdown table (empty without rows)."""
    if not rows:
        return []
    lines = ["", f"## nnls frames/s against n_mels (n_stft {N_STFT}, {SAMPLE_RATE} Hz)", "",
             "| n_mels | backend | device | shared bytes a warp | warps a block | frames | "
             "time (s) | frames/s | note |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ok = r["status"] == "ok"
        lines.append("| " + " | ".join([
            str(r["n_mels"]), r["backend"], r["device"] or "-", str(r["shared_bytes_per_warp"]),
            str(r["warps_per_block"] or "opt-in"), str(r["frames"]),
            f"{r['seconds']:.4g}" if ok else "-",
            f"{r['frames_per_second']:,.0f}" if ok else "-",
            "" if ok else f"{r['status']}: {r['error']}".replace("|", "/")]) + " |")
    return lines
