"""``python -m bench --threads``: cumel's CPU nnls against worker threads, and against lstsq.

Two tables per workload, both at the defaults a user gets:

- clips: for every clip of the workload (``--audio DIR``, its ``speech_*``/``music_*`` files;
  synthetic signals without it), nnls with ``workers=None`` (every usable core) against
  ``numpy.linalg.lstsq`` + relu (NumPy's BLAS, its own threads), float32: times, their ratio,
  Newton steps per frame and the largest per-frame mel residual of nnls; then the same for all
  the clips as one batch (``ALL_CLIPS``: their frames side by side, as a folder run with
  ``--batch-frames`` solves them; a clip alone is one chunk of the NumPy loop, solved on one
  core, while the compiled loop shares even a clip's frames between the threads);
- threads: the clips side by side, tiled to at least ``--frames`` frames (default 24000), solved
  with ``workers`` = each count of ``--threads``: frames/s, speed-up over one thread, and
  whether the bits equal the one-thread answer.

Each nnls row is run on every CPU loop there is (``loop``): the NumPy loop and, where numba
imports (the ``cpu`` extra), the compiled one (``CUMEL_CPU`` set for the run).

Times are medians of ``--repeats`` runs after a warm-up (``SHORT_RUN_REPEATS`` at least for a clip
of a few milliseconds), the rows of a table interleaved round by round (a change of load on a
shared machine hits every row alike); in the clips table each timed run starts ``SETTLE_SECONDS``
after the one before, once OpenBLAS's threads have stopped spinning (measured: nnls on two threads
right after lstsq took 140 ms for the tts clips side by side, 120 ms 0.3 s later). Each round of
the thread table also measures the machine's own ceiling: W threads of a plain NumPy multiply (2
MB arrays, no Python in between) against one, the most any threaded code can gain at that moment
(a virtual machine's cores may be shared with its neighbours). Writes ``results.json`` and
``results.md`` into ``--out``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import statistics
import threading
import time
from pathlib import Path

import numpy as np

import cumel
from cumel import _threads
from cumel.workloads import WORKLOADS

from . import environment, report
from .batches import load_clips, quiet_empty_filters, workload_filterbank
from .scaling import interleaved

CLIP_COLUMNS = ("workload", "clip", "frames", "loop", "nnls (s)", "lstsq + relu (s)", "nnls / lstsq",
                "Newton steps mean / max", "max mel residual")
THREAD_COLUMNS = ("workload", "frames", "loop", "workers", "time (s)", "frames/s", "speed-up vs 1",
                  "machine's ceiling", "compute ceiling", "same bits as 1")
DEFAULT_FRAMES = 24000
ALL_CLIPS = "all clips, one batch"
SETTLE_SECONDS = 0.3      # before each timed run of the clips table: lstsq's BLAS threads go idle
SHORT_RUN_SECONDS = 0.05  # a clip whose lstsq takes less than this is timed SHORT_RUN_REPEATS times
SHORT_RUN_REPEATS = 9     # (at least): a run of a few ms moves by a third from one run to the next


def cpu_loops():
    """The CPU loops of nnls to time: ``numpy``, and ``numba`` (compiled) where numba is there."""
    return ["numpy"] + (["numba"] if importlib.util.find_spec("numba") is not None else [])


@contextlib.contextmanager
def cpu_loop(loop):
    """nnls's CPU loop for the calls inside (``CUMEL_CPU``)."""
    before = os.environ.get("CUMEL_CPU")
    os.environ["CUMEL_CPU"] = loop
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CUMEL_CPU", None)
        else:
            os.environ["CUMEL_CPU"] = before


def on_loop(loop, fn):
    """``fn`` run on nnls's CPU loop ``loop``."""
    def run():
        with cpu_loop(loop):
            return fn()
    return run


LOOP_NAMES = {"numpy": "NumPy", "numba": "compiled"}


def parse_threads(text):
    """``"1,2"`` -> ``[1, 2]``; None -> 1 and every usable core."""
    if text is None:
        return sorted({1, _threads.usable_cpus()})
    counts = [int(w) for w in text.split(",") if w.strip()]
    if not counts or min(counts) < 1:
        raise ValueError(f"--threads must be a comma list of positive integers, got {text!r}")
    return counts


def parallel_ceiling(workers, seconds=0.2):
    """Speed-up of ``workers`` threads over one on plain NumPy work (each thread its own 2 MB
    arrays, a multiply at a time): what the machine gives threads right now."""
    if workers <= 1:
        return 1.0
    arrays = [(np.random.default_rng(k).random((1025, 255)), np.empty((1025, 255)))
              for k in range(workers)]
    reps = 1
    while True:                               # about ``seconds`` of work for one thread
        t0 = time.perf_counter()
        for _ in range(reps):
            np.multiply(arrays[0][0], 1.5, out=arrays[0][1])
        if time.perf_counter() - t0 > seconds / 4 or reps > 1 << 16:
            break
        reps *= 2

    def work(k):
        a, out = arrays[k]
        for _ in range(reps):
            np.multiply(a, 1.5, out=out)

    return _serial_over_threads(work, workers)


def _serial_over_threads(work, workers):
    """Time of ``work(k)`` for k < ``workers`` one after the other, over the time of the same
    calls on ``workers`` threads at once."""
    t0 = time.perf_counter()
    for k in range(workers):
        work(k)
    serial = time.perf_counter() - t0
    threads = [threading.Thread(target=work, args=(k,)) for k in range(workers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return serial / (time.perf_counter() - t0)


_SPIN = []


def _spin_kernel():
    """A compiled loop that only computes (a chain of multiply-adds on 1025 numbers held in the
    first level of cache), GIL-free: what the compiled nnls loop's threads are made of."""
    if not _SPIN:
        from numba import njit

        @njit(nogil=True, cache=False)
        def spin(x, reps):
            total = 0.0
            for _ in range(reps):
                acc = 0.0
                for j in range(x.shape[0]):
                    acc = acc * 0.999 + x[j]
                total += acc
            return total

        spin(np.ones(4), 1)
        _SPIN.append(spin)
    return _SPIN[0]


def compute_ceiling(workers, seconds=0.2):
    """Speed-up of ``workers`` threads over one on compiled, GIL-free arithmetic with no memory
    traffic (:func:`_spin_kernel`): the most the compiled loop's threads can gain at that moment
    (a virtual machine's cores may be shared or throttled); None without numba."""
    if workers <= 1:
        return 1.0
    if importlib.util.find_spec("numba") is None:
        return None
    spin = _spin_kernel()
    x = np.random.default_rng(0).random(1025)
    reps = 1
    while True:
        t0 = time.perf_counter()
        spin(x, reps)
        if time.perf_counter() - t0 > seconds / 4 or reps > 1 << 20:
            break
        reps *= 2
    return _serial_over_threads(lambda k: spin(x, reps), workers)


def lstsq_relu(A):
    """The baseline of ``python -m bench`` (``numpy.linalg.lstsq`` + relu) as a function of M."""
    def run(M):
        S = np.linalg.lstsq(A, M, rcond=None)[0]
        return np.maximum(S, 0, out=S)
    return run


def clip_rows(workload, clips, repeats, log):
    inv = cumel.InverseMelScale(**workload.inverse_kwargs())          # workers=None: every core
    lstsq = lstsq_relu(np.ascontiguousarray(workload_filterbank(workload, np.float32).T))
    rows = []
    mels = [(name, np.ascontiguousarray(workload.pair(audio)[1], np.float32)) for name, audio in clips]
    if len(mels) > 1:
        mels.append((ALL_CLIPS, np.ascontiguousarray(np.concatenate([M for _, M in mels], axis=1))))
    loops = cpu_loops()
    for loop in loops:                          # compile (numba) and build the plan untimed
        on_loop(loop, lambda: inv(mels[0][1][:, :2]))()
    for name, M in mels:
        runs = [(loop, on_loop(loop, lambda: inv(M))) for loop in loops]
        t0 = time.perf_counter()
        lstsq(M)
        short = time.perf_counter() - t0 < SHORT_RUN_SECONDS
        timed = interleaved(runs + [("lstsq", lambda: lstsq(M))],
                            max(repeats, SHORT_RUN_REPEATS) if short else repeats, settle=SETTLE_SECONDS)
        t_lstsq = timed["lstsq"][0]
        for loop in loops:
            t_nnls = timed[loop][0]
            _, info = on_loop(loop, lambda: inv(M, return_info=True))()   # outside the timing
            rows.append({"workload": workload.name, "clip": name, "frames": int(M.shape[1]),
                         "loop": LOOP_NAMES[loop], "nnls_seconds": t_nnls,
                         "lstsq_seconds": t_lstsq, "ratio": t_nnls / t_lstsq,
                         "steps_mean": float(info.iterations.mean()),
                         "steps_max": int(info.iterations.max()),
                         "max_mel_residual": float(info.mel_residual.max()),
                         "converged": bool(info.converged.all())})
            log(f"[threads] {workload.name} {name} {loop}: nnls/lstsq {rows[-1]['ratio']:.2f}")
    return rows


def thread_rows(workload, clips, counts, frames, repeats, log):
    M = np.concatenate([workload.pair(audio)[1] for _, audio in clips], axis=1)
    M = np.ascontiguousarray(np.tile(M, (1, -(-frames // M.shape[1]))), np.float32)
    kwargs = workload.inverse_kwargs()
    loops = cpu_loops()
    runs = [((loop, w), on_loop(loop, (lambda t: lambda: t(M))(cumel.InverseMelScale(**kwargs, workers=w))))
            for loop in loops for w in counts]
    for loop in loops:                          # compile (numba) and build the plan untimed
        on_loop(loop, lambda: cumel.InverseMelScale(**kwargs, workers=1)(M[:, :2]))()
    log(f"[threads] {workload.name}: {M.shape[1]} frames, workers {counts}, loops {loops}")
    ceilings = {w: [] for w in counts}
    compute = {w: [] for w in counts}

    def probe():
        for w in counts:
            ceilings[w].append(parallel_ceiling(w))
            compute[w].append(compute_ceiling(w))

    timed = interleaved(runs, repeats, each_round=probe)
    rows = []
    for loop in loops:
        reference = on_loop(loop, lambda: cumel.InverseMelScale(**kwargs, workers=1)(M))()
        one = timed[loop, 1][0] if (loop, 1) in timed else None
        for w in counts:
            seconds, S = timed[loop, w]
            rows.append({"workload": workload.name, "frames": int(M.shape[1]),
                         "loop": LOOP_NAMES[loop], "workers": w, "seconds": seconds,
                         "frames_per_second": M.shape[1] / seconds,
                         "speedup_vs_1": None if one is None else one / seconds,
                         "machine_ceiling": statistics.median(ceilings[w]),
                         "compute_ceiling": (None if None in compute[w] else
                                             statistics.median(compute[w])),
                         "same_bits": bool(np.array_equal(S, reference))})
    return rows


def markdown(results):
    env, s = results["environment"], results["settings"]
    lines = ["# cumel CPU nnls: worker threads and the lstsq baseline", "",
             *report.environment_lines(env),
             f"- audio: {s['audio'] or 'synthetic signals'}; float32; default tolerances; time: "
             f"median of {s['repeats']} interleaved runs after one warm-up (of at least "
             f"{SHORT_RUN_REPEATS} for a clip whose lstsq takes under {SHORT_RUN_SECONDS * 1e3:.0f} ms)",
             "",
             "Every clip, both at their defaults (nnls `workers=None`: "
             f"{s['usable_cores']} threads here; lstsq: NumPy's BLAS threads), then each "
             f"workload's clips side by side in one call (\"{ALL_CLIPS}\": a clip alone is one "
             "chunk of the NumPy loop, on one core; the compiled loop shares a clip's frames "
             "between the threads):", "",
             "| " + " | ".join(CLIP_COLUMNS) + " |", "|" + "---|" * len(CLIP_COLUMNS)]
    for r in results["clips"]:
        lines.append(f"| {r['workload']} | {r['clip']} | {r['frames']} | {r.get('loop', 'NumPy')} | "
                     f"{r['nnls_seconds']:.4f} | "
                     f"{r['lstsq_seconds']:.4f} | {r['ratio']:.2f} | "
                     f"{r['steps_mean']:.2f} / {r['steps_max']} | {r['max_mel_residual']:.1e} |")
    lines += ["", "Worker threads (`InverseMelScale(workers=W)`), the clips tiled into one batch; the "
              "machine's ceiling is W threads of a plain NumPy multiply against one, the compute "
              "ceiling W threads of a compiled, GIL-free loop of arithmetic alone (numba) against "
              "one, both measured in the same rounds (median):",
              "", "| " + " | ".join(THREAD_COLUMNS) + " |", "|" + "---|" * len(THREAD_COLUMNS)]
    for r in results["threads"]:
        speed = "-" if r["speedup_vs_1"] is None else f"{r['speedup_vs_1']:.2f}x"
        lines.append(f"| {r['workload']} | {r['frames']} | {r.get('loop', 'NumPy')} | {r['workers']} | "
                     f"{r['seconds']:.3f} | "
                     f"{r['frames_per_second']:,.0f} | {speed} | {r['machine_ceiling']:.2f}x | "
                     f"{_ratio(r.get('compute_ceiling'))} | {'yes' if r['same_bits'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def _ratio(value):
    return "-" if value is None else f"{value:.2f}x"


def run(args, argv, log):
    """The ``--threads`` mode of ``python -m bench``; returns the exit status."""
    quiet_empty_filters()
    counts = parse_threads(args.threads)
    frames = args.frames or DEFAULT_FRAMES
    env = environment.collect(["python", "-m", "bench", *argv])
    results = {"environment": env,
               "settings": {"workloads": list(args.workload), "threads": counts, "frames": frames,
                            "repeats": args.repeats,
                            "audio": environment.portable_path(args.audio),
                            "usable_cores": _threads.usable_cpus()},
               "clips": [], "threads": []}
    for name in args.workload:
        workload = WORKLOADS[name]
        clips = load_clips(workload, args.audio, count=len(_clip_paths(workload, args.audio)) or 2)
        results["clips"] += clip_rows(workload, clips, args.repeats, log)
        results["threads"] += thread_rows(workload, clips, counts, frames, args.repeats, log)
    env["load_average_after"] = environment.load_average()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = report.write_json(results, out)
    md_path = out / report.MARKDOWN_NAME
    md_path.write_text(markdown(results))
    print(markdown(results))
    log(f"wrote {json_path}, {md_path}")
    ok = all(r["same_bits"] for r in results["threads"]) and all(r["converged"]
                                                                  for r in results["clips"])
    return 0 if ok else 1


def _clip_paths(workload, audio_dir):
    return [] if audio_dir is None else sorted(Path(audio_dir).glob(workload.clips + "*.wav"))
