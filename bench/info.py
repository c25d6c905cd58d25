"""``python -m bench info``: what ``return_info=True`` costs on a large batch, in memory and time.

One workload's clips are tiled along time into a mel spectrogram of ``--frames`` frames, shaped
(``--batch``, n_mels, frames / batch), float32. Two calls of the default solver (nnls):
``inv(mel)`` and ``inv(mel, return_info=True)``.

- memory: the peak NumPy allocation during each call (``tracemalloc``, which NumPy reports its
  buffers to), the input excluded (allocated before), against the output's size;
- time: the median of ``--repeats`` runs of each call after one warm-up, the two calls
  interleaved run by run so that the load of a shared machine hits both alike (tracing off).

Prints a table and writes ``results.json`` and ``results.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

import cumel
from cumel.workloads import WORKLOADS

from . import environment, report
from .batches import load_clips, quiet_empty_filters


def build_parser():
    p = argparse.ArgumentParser(prog="python -m bench info", description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=1_000_000, help="frames in the batch (1e6)")
    p.add_argument("--batch", type=int, default=1, help="batch items the frames are split into")
    p.add_argument("--workload", default="speech-201x128", choices=sorted(WORKLOADS))
    p.add_argument("--audio", default=None, help="folder of the workload's clips (tests/data/audio); "
                                                 "default: synthetic audio")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="bench/out/info")
    return p


def tiled_mel(workload, audio_dir, frames, batch):
    """(batch, n_mels, frames // batch) float32: the workload's first clip, tiled along time."""
    _, audio = load_clips(workload, audio_dir, 1)[0]
    _, mel = workload.pair(audio)
    T = frames // batch
    reps = -(-frames // mel.shape[-1])
    return np.ascontiguousarray(np.tile(mel, (1, reps))[:, :batch * T].astype(np.float32)
                                .reshape(workload.n_mels, batch, T).transpose(1, 0, 2))


def peak_bytes(call):
    """Peak bytes NumPy allocated during ``call()`` (the result is dropped afterwards)."""
    tracemalloc.start()
    try:
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return peak


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if min(args.frames, args.batch, args.repeats) < 1 or args.frames < args.batch:
        parser.error("--frames, --batch and --repeats must be >= 1, --frames >= --batch")
    quiet_empty_filters()
    w = WORKLOADS[args.workload]
    mel = tiled_mel(w, args.audio, args.frames, args.batch)
    inv = cumel.InverseMelScale(w.n_stft, w.n_mels, sample_rate=w.sample_rate, f_min=w.f_min,
                                f_max=w.f_max)
    inv(mel[..., :8])                                    # plan built before any measurement

    def plain():
        return inv(mel)

    def with_info():
        return inv(mel, return_info=True)

    env = environment.collect(["python", "-m", "bench", "info", *argv])
    out_bytes = mel.shape[0] * w.n_stft * mel.shape[-1] * 4
    peaks = {"plain": peak_bytes(plain), "info": peak_bytes(with_info)}
    times = {"plain": [], "info": []}
    plain(), with_info()                                 # warm-up
    for _ in range(args.repeats):
        for name, call in (("plain", plain), ("info", with_info)):
            t0 = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t0)
    env["load_average_after"] = environment.load_average()
    rows = []
    for name, call in (("inv(mel)", "plain"), ("inv(mel, return_info=True)", "info")):
        rows.append({"call": name, "frames": args.frames, "shape": list(mel.shape),
                     "output bytes": out_bytes, "peak bytes": peaks[call],
                     "peak / output": peaks[call] / out_bytes,
                     "time (s)": statistics.median(times[call]), "runs (s)": times[call]})
    rows[1]["time / without info"] = rows[1]["time (s)"] / rows[0]["time (s)"]
    settings = dict(vars(args), audio=environment.portable_path(args.audio),
                    out=environment.portable_path(args.out))
    results = {"environment": env, "settings": settings, "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(results, out)
    title = (f"# return_info=True on {args.frames:,} frames ({args.workload}, shape "
             f"{tuple(mel.shape)}, float32, nnls)")
    lines = [title, "",
             "| call | peak (MB) | peak / output | time (s) | time / without info |",
             "| --- | --- | --- | --- | --- |"]
    for row in rows:
        ratio = row.get("time / without info")
        lines.append(f"| `{row['call']}` | {row['peak bytes'] / 1e6:,.0f} | "
                     f"{row['peak / output']:.3f} | {row['time (s)']:.2f} | "
                     f"{'-' if ratio is None else f'{ratio:.3f}'} |")
    lines += ["", (f"Output {out_bytes / 1e6:,.0f} MB; median of {args.repeats} runs after one "
                   "warm-up, interleaved; peaks by tracemalloc (input excluded).")]
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    print(text)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}", file=sys.stderr)
    return 0
