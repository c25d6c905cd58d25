"""``python -m bench --scaling``: frames/s of cumel's nnls against the number of CPU workers.

One workload's clips are concatenated along time into one mel spectrogram (n_mels, F). Rows:

- in memory: ``InverseMelScale(...)(M)`` in this process (the reference);
- Dask: the same array as a ``dask.array`` in time chunks, computed on a
  ``distributed.LocalCluster`` of W worker processes (one thread each); the cluster is started
  before the timing, the chunks travel to the workers in every run. Twice: with the
  ``MALLOC_TRIM_THRESHOLD_`` Dask sets for its workers by default, and without it;
- folder CLI: M cut into ``--pieces`` .npy files in a temporary folder and
  ``cumel invert FOLDER -o OUT --jobs W --overwrite`` run in this process (worker start-up,
  reading and atomic writing included).

Each row is the median of ``--repeats`` runs after one warm-up; the runs of all rows are
interleaved (round by round), so that the load of a shared machine hits every row alike. Every
row's output is checked bit-equal to the in-memory answer (nnls solves each frame on its own).
Writes ``results.json`` and ``results.md`` into ``--out``.
"""
from __future__ import annotations

import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import cumel
from cumel.workloads import WORKLOADS

from . import environment, report
from .batches import load_clips, quiet_empty_filters

COLUMNS = ("mode", "workers", "frames", "chunks / files", "time (s)", "frames/s",
           "speed-up vs 1 worker", "same bits as in memory")


def concatenated_mel(workload, audio_dir, clips):
    """The clips' mel spectrograms side by side: (n_mels, F) float32, and the clip names."""
    sources = load_clips(workload, audio_dir, clips)
    mels = [workload.pair(audio)[1] for _, audio in sources]
    return np.ascontiguousarray(np.concatenate(mels, axis=1), np.float32), [n for n, _ in sources]


def interleaved(runs, repeats, log=None, each_round=None, settle=0.0):
    """Time every ``(name, run)`` of ``runs``: one warm-up each, then ``repeats`` rounds that
    run each once in turn (so a change of load on a shared machine hits every row alike), and
    ``each_round()`` first in every round where given. ``settle``: seconds to wait, untimed,
    before each timed run (OpenBLAS's threads keep spinning for 0.1-0.3 s after a call,
    measured: a threaded run right after a BLAS one would share its cores with them). Returns
    ``{name: (median seconds, last result)}``."""
    last = {name: run() for name, run in runs}
    times = {name: [] for name, _ in runs}
    for k in range(repeats):
        if log is not None:
            log(f"[scaling] round {k + 1}/{repeats}")
        if each_round is not None:
            each_round()
        for name, run in runs:
            if settle:
                time.sleep(settle)
            t0 = time.perf_counter()
            last[name] = run()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(times[name]), last[name]) for name, _ in runs}


def row(mode, workers, frames, parts, seconds, same):
    return {"mode": mode, "workers": workers, "frames": frames, "parts": parts,
            "seconds": seconds, "frames_per_second": frames / seconds, "same_bits": same}


TRIM = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


def dask_run(stack, mel, kwargs, workers, chunk_frames, trim_default=True):
    """A ``run()`` computing the Dask graph on a LocalCluster of ``workers`` processes, kept
    open on ``stack``; and the number of chunks.

    ``trim_default=False`` starts the workers without Dask's ``MALLOC_TRIM_THRESHOLD_=65536``
    (with it, glibc maps and unmaps every large temporary: nnls runs about 3x slower). Dask's
    nanny also writes the variable into this process's environment, so clusters without it
    must be started first.
    """
    import dask
    import dask.array as da
    import distributed
    inv = cumel.InverseMelScale(**kwargs)
    x = da.from_array(mel, chunks=(mel.shape[0], chunk_frames))
    with dask.config.set({} if trim_default else {TRIM: None}):
        cluster = stack.enter_context(distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
            silence_logs=40))
    client = stack.enter_context(distributed.Client(cluster, set_as_default=False))
    client.wait_for_workers(workers)
    return (lambda: client.compute(inv(x)).result()), x.numblocks[1]


def cli_run(mel, kwargs, workers, pieces, scratch):
    """A ``run()`` of ``cumel invert FOLDER -o OUT --jobs workers --overwrite`` over ``mel`` cut
    into ``pieces`` files; it returns the outputs side by side."""
    from cumel import cli
    folder, out = Path(scratch) / "mels", Path(scratch) / f"out-{workers}"
    folder.mkdir(exist_ok=True)
    bounds = np.linspace(0, mel.shape[1], pieces + 1).astype(int)
    for k in range(pieces):
        np.save(folder / f"piece_{k:03d}.npy", mel[:, bounds[k]:bounds[k + 1]])
    argv = ["invert", str(folder), "-o", str(out), "--overwrite", "--no-progress",
            "--jobs", str(workers), "--n-stft", str(kwargs["n_stft"]),
            "--sample-rate", str(kwargs["sample_rate"]), "--f-min", str(kwargs["f_min"]),
            "--f-max", str(kwargs["f_max"]), "--norm", str(kwargs["norm"] or "none"),
            "--mel-type", kwargs["mel_type"]]

    def run():
        with contextlib.redirect_stdout(io.StringIO()):
            status = cli.main(argv)
        if status != 0:
            raise RuntimeError(f"cumel {' '.join(argv)} exited with {status}")
        return np.concatenate([np.load(out / f"piece_{k:03d}.npy") for k in range(pieces)], axis=1)

    return run


def add_speedups(rows):
    one = {r["mode"]: r["seconds"] for r in rows if r["workers"] == 1}
    for r in rows:
        r["speedup_vs_1_worker"] = one[r["mode"]] / r["seconds"] if r["mode"] in one else None


def markdown(results):
    env, s = results["environment"], results["settings"]
    lines = ["# cumel scaling benchmark (CPU workers)", "",
             f"- command: `{env['command']}`", f"- when: {env['timestamp']}",
             f"- CPU: {env['cpu']} ({env['cores']} cores); Python {env['python']}; "
             + ", ".join(f"{k} {v}" for k, v in sorted(env["versions"].items())),
             f"- cumel source: {report._revision(env.get('cumel_source'))}",
             f"- load average (1, 5, 15 min) at start {report._loads(env['load_average'])}, at end "
             f"{report._loads(env.get('load_average_after'))}",
             f"- workload {s['workload']}, solver nnls (default tolerances), float32; "
             f"{s['frames']} frames from {', '.join(sorted(set(s['clips'])))}; time: median of "
             f"{s['repeats']} interleaved runs after one warm-up; Dask time chunks of "
             f"{s['chunk_frames']} frames, one thread per worker process", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in results["rows"]:
        speed = "-" if r["speedup_vs_1_worker"] is None else f"{r['speedup_vs_1_worker']:.2f}x"
        lines.append(f"| {r['mode']} | {r['workers']} | {r['frames']} | {r['parts']} | "
                     f"{r['seconds']:.3f} | {r['frames_per_second']:,.0f} | {speed} | "
                     f"{'yes' if r['same_bits'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def run(args, argv, log):
    """The ``--scaling`` mode of ``python -m bench``; returns the exit status."""
    quiet_empty_filters()
    name = args.workload[0]
    workload = WORKLOADS[name]
    mel, clips = concatenated_mel(workload, args.audio, args.clips)
    kwargs = workload.inverse_kwargs()
    workers = [int(w) for w in args.workers.split(",")]
    env = environment.collect(["python", "-m", "bench", *argv])
    results = {"environment": env,
               "settings": {"workload": name, "clips": clips, "frames": int(mel.shape[1]),
                            "repeats": args.repeats, "workers": workers, "pieces": args.pieces,
                            "audio": environment.portable_path(args.audio)},
               "rows": []}
    log(f"[scaling] {name}: {mel.shape[1]} frames from {len(clips)} clip(s)")
    inv = cumel.InverseMelScale(**kwargs)
    runs = [("memory", lambda: inv(mel))]
    parts = {"memory": 1}
    chunk = args.chunk_frames or -(-mel.shape[1] // (4 * max(workers)))
    results["settings"]["chunk_frames"] = chunk
    with contextlib.ExitStack() as stack, \
            tempfile.TemporaryDirectory(prefix="cumel-scaling-") as scratch:
        try:
            import distributed  # noqa: F401
            for trim_default in (False, True):          # without the variable first
                mode = "dask" if trim_default else "dask-notrim"
                for w in workers:
                    run_w, parts[(mode, w)] = dask_run(stack, mel, kwargs, w, chunk, trim_default)
                    runs.append(((mode, w), run_w))
        except ImportError as exc:
            log(f"[scaling] dask rows skipped: {exc}")
        for w in workers:
            runs.append((("cli", w), cli_run(mel, kwargs, w, args.pieces, scratch)))
            parts[("cli", w)] = args.pieces
        timings = interleaved(runs, args.repeats, log)
    reference = timings["memory"][1]
    modes = {"memory": "in memory (1 process)",
             "dask-notrim": "dask LocalCluster, MALLOC_TRIM_THRESHOLD_ unset",
             "dask": "dask LocalCluster, Dask's default MALLOC_TRIM_THRESHOLD_=65536",
             "cli": "cumel invert FOLDER (folder CLI)"}
    rows = []
    for key, (seconds, S) in timings.items():
        mode, w = (key, 1) if key == "memory" else key
        rows.append(row(modes[mode], w, int(mel.shape[1]), parts[key], seconds,
                        bool(np.array_equal(S, reference))))
    env["load_average_after"] = environment.load_average()
    add_speedups(rows)
    results["rows"] = rows
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = report.write_json(results, out)
    md_path = out / report.MARKDOWN_NAME
    md_path.write_text(markdown(results))
    print(markdown(results))
    log(f"wrote {json_path}, {md_path}")
    return 0 if all(r["same_bits"] for r in rows) else 1
