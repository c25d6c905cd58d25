"""Command line: ``cumel invert`` (mel files or folders of them to spectrograms, and sound with
``--wav``; a model's features with ``--frontend``), ``cumel frontends``, ``cumel demo`` and
``cumel stream`` (frames to a WAV as a stream, :mod:`cumel._stream_cli`).

The work over many files (collecting, reading, solving, atomic writes, worker processes,
progress, the report) lives in ``cumel._bulk``; this module wires it to the arguments.
"""
from __future__ import annotations

import argparse
import copy
import shlex
import signal
import sys
import time
import warnings
from importlib import resources
from pathlib import Path

import numpy as np

from . import __version__, _bulk, _stream_cli
from .solvers.nnls import chunks as _nnls_chunks
from .mel_frontends import PRESETS, frontend, frontends
from .transforms import InverseMelScale
from ._validate import SOLVERS, percent


def _solver_args(p):
    p.add_argument("--solver", default="nnls", choices=SOLVERS, help="default: nnls")
    p.add_argument("--max-iter", type=int, default=100000)
    p.add_argument("--tolerance-loss", type=float, default=1e-5)
    p.add_argument("--tolerance-change", type=float, default=1e-8)
    p.add_argument("--seed", type=int, default=None,
                   help="start of the SGD solvers and of Griffin-Lim (--wav)")
    p.add_argument("--device", default=None, choices=("cpu", "cuda", "auto"))
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="threads of the CPU nnls solve in each process (default: every core "
                        "with --jobs 1, one thread a process with --jobs N > 1)")


def _build_parser():
    parser = argparse.ArgumentParser(prog="cumel", description="Invert mel spectrograms.")
    parser.add_argument("--version", action="version", version=f"cumel {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    inv = sub.add_parser(
        "invert", help="invert mel spectrograms (..., n_mels, time) stored as .npy/.npz",
        description="Invert mel spectrograms stored as .npy or .npz (..., n_mels, time). One input "
                    "file and -o FILE: writes exactly FILE. Otherwise -o is a folder: each file "
                    "named goes to OUTDIR/<name>.npy, each file found in a folder (recursively) "
                    "to the same relative path under OUTDIR. Outputs are written atomically; "
                    "a re-run skips outputs that exist unless --overwrite. Exit status: 0, 1 when "
                    "a file failed or a folder could not be searched, 2 on bad arguments, 130 "
                    "when interrupted (Ctrl-C), 143 when terminated (SIGTERM).")
    inv.add_argument("inputs", nargs="+", metavar="PATH", help=".npy/.npz files or folders")
    inv.add_argument("-o", "--output", default=None, metavar="OUT",
                     help="output file (one input file) or folder; may be left out with one "
                          "input file and --wav OUT.wav")
    inv.add_argument("--key", default=None, metavar="NAME",
                     help="array to read from .npz inputs (default: 'mel', or the only array)")
    inv.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                     help="worker processes on the CPU (default 1; with --device cuda one "
                          "process feeds the GPU)")
    inv.add_argument("--overwrite", action="store_true", help="redo outputs that exist")
    inv.add_argument("--report", default=None, metavar="FILE.json",
                     help="write per-file results (input, output, frames, seconds, mel residual, "
                          "error) as JSON")
    inv.add_argument("--batch-frames", type=int, default=None, metavar="N",
                     help="solve the frames of many files together, up to N per solve, in one "
                          "process (nnls/lstsq; the default on --device cuda: 65536)")
    inv.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    inv.add_argument("--frontend", default=None, choices=list(PRESETS), metavar="NAME",
                     help="the inputs are this front end's features (Whisper's log-mel, "
                          "HiFi-GAN's log mel, dB mels): undone, inverted on its filterbank, "
                          "their sound on its frame grid; one of " + ", ".join(PRESETS)
                          + " (cumel frontends lists them). The filterbank and STFT options "
                          "below, where given, override the front end's")
    inv.add_argument("--n-stft", type=int, default=None,
                     help="linear bins, n_fft // 2 + 1 (required without --frontend)")
    inv.add_argument("--n-mels", type=int, default=None, help="default: the input's size at -2")
    inv.add_argument("--sample-rate", type=int, default=None, help="Hz (default 16000)")
    inv.add_argument("--f-min", type=float, default=None, help="Hz (default 0)")
    inv.add_argument("--f-max", type=float, default=None, help="Hz (default sample-rate // 2)")
    inv.add_argument("--norm", default=None, help="none or slaney (default none)")
    inv.add_argument("--mel-type", default=None, help="htk or slaney (default htk)")
    _solver_args(inv)
    _wav_args(inv, None, "; with one input file --wav OUT.wav names the file, over folders "
                         "--wav writes OUTDIR/<name>.wav beside each OUTDIR/<name>.npy")
    inv.add_argument("--wav-only", action="store_true",
                     help="write the sound only, no spectrogram: with one input file -o names "
                          "the .wav (or give --wav OUT.wav without -o); over folders each "
                          "OUTDIR/<name>.wav")

    sub.add_parser("frontends", help="list the front-end presets (--frontend) and their "
                                     "parameters")

    demo = sub.add_parser("demo", help="invert the bundled example (4 s of speech, 201 x 128)")
    _solver_args(demo)
    _wav_args(demo, "demo_reconstruction.wav", " (the folder the demo runs in; the line "
                                               "'wrote ...' gives the full path)")
    _stream_cli.add_parser(sub)
    return parser


def _wav_args(p, default, where):
    p.add_argument("--wav", default=default, nargs="?", const=True, metavar="OUT.wav",
                   help="also turn the spectrogram into sound (fast Griffin-Lim, n_fft = "
                        "2 (n_stft - 1), the mel taken as of |STFT|**power; with --frontend on "
                        "its own grid) and write it as 16-bit PCM WAV at the level computed "
                        "(full scale 1.0; samples beyond it are clipped, with a warning; see "
                        "--normalize)" + where + (f"; default {default}" if default else ""))
    p.add_argument("--normalize", action="store_true",
                   help="scale the sound so that its peak is at 0.99 of full scale (no "
                        "clipping; silence stays silent) instead of writing the level computed")
    p.add_argument("--method", default="griffinlim", choices=("griffinlim", "admm"),
                   help="how the sound is made (--wav): griffinlim (default; fast Griffin-Lim "
                        "on the inverted spectrogram) or admm (from there, magnitude and phase "
                        "together against the mel; --n-iter ADMM iterations)")
    p.add_argument("--hop-length", type=int, default=None,
                   help="STFT hop in samples for --wav (default n_fft // 4 like torchaudio; "
                        "the demo uses 160)")
    p.add_argument("--win-length", type=int, default=None,
                   help="STFT window in samples for --wav (default n_fft)")
    p.add_argument("--power", type=float, default=None,
                   help="the mel is of |STFT|**power: 2 (default) a power spectrogram, 1 "
                        "magnitudes (--wav)")
    p.add_argument("--n-iter", type=int, default=32,
                   help="Griffin-Lim (or ADMM, --method admm) iterations (default 32)")
    p.add_argument("--length", type=int, default=None, metavar="SAMPLES",
                   help="samples of the sound (default: what the frames cover); with "
                        "--frontend only the frames covering them are inverted (Whisper's "
                        "30 s of padding)")


def _to_wav(args, path, S, sample_rate, hop_default=None, fe=None, mel=None, transform=None):
    """The sound of the spectrogram ``S`` (..., n_stft, T) to ``path``: Griffin-Lim (on the front
    end ``fe``'s grid when given), or ADMM from the linear ``mel`` and its ``transform`` with
    ``--method admm``; prints what it did. Returns the spectral convergence
    ``|| |STFT(y)| - |S| || / || |S| ||`` (against the spectrogram it was given, in magnitudes:
    the original audio is not known here; scale-free where the front end kept no level)."""
    from .stft import stft
    hop = args.hop_length if args.hop_length is not None else hop_default
    audio = dict(hop_length=hop, win_length=args.win_length, power=args.power,
                 n_iter=args.n_iter, length=args.length, seed=args.seed)
    method = "ADMM" if args.method == "admm" else "Griffin-Lim"
    if args.method == "admm":
        y = _bulk.admm_sound(np.asarray(S), mel, transform, audio, fe, args.device, _workers(args))
    if fe is not None:
        if args.method != "admm":
            y = np.asarray(fe.griffin_lim(np.asarray(S), length=args.length, n_iter=args.n_iter,
                                          seed=args.seed, device=args.device,
                                          workers=_workers(args)))
        n_fft, hop, win, power = fe.n_fft, fe.hop_length, fe.win_length, fe.power
        grid = dict(center=fe.center, pad=fe.pad, pad_mode=fe.pad_mode)
        what = f" on the {fe.name!r} front end's grid"
    else:
        if args.method == "admm":
            from .griffin_lim import GriffinLim
            gl = GriffinLim(2 * (S.shape[-2] - 1), args.n_iter, args.win_length, hop,
                            power=2.0 if args.power is None else args.power)
        else:
            y, gl = _bulk.audio_of(np.asarray(S), sample_rate, hop, args.seed, args.device,
                                   n_iter=args.n_iter, win_length=args.win_length,
                                   power=args.power, length=args.length, workers=_workers(args))
        y = np.asarray(y)
        n_fft, hop, win, power, grid, what = (gl.n_fft, gl.hop_length, gl.win_length, gl.power,
                                              {}, "")
    target = np.asarray(S, np.float64) ** (1.0 / power)
    n_frames = target.shape[-1]
    rebuilt = np.abs(stft(np.asarray(y, np.float64), n_fft, hop, win, **grid))[..., :n_frames]
    missing = n_frames - rebuilt.shape[-1]          # a --length shorter than the frames
    if missing > 0:
        rebuilt = np.concatenate([rebuilt, np.zeros(rebuilt.shape[:-1] + (missing,))], -1)
    if fe is not None and fe.ref == "max":      # the level is gone: compare shapes, not levels
        rebuilt *= float((rebuilt * target).sum() / max((rebuilt * rebuilt).sum(), 1e-300))
    sc = float(np.linalg.norm(rebuilt - target) / max(np.linalg.norm(target), 1e-300))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _bulk.save_wav(path, y, sample_rate, args.normalize)
    for w in caught:                             # the clip guard: said as the CLI's warning
        print(f"cumel: warning: {w.message}", file=sys.stderr)
    channels = int(np.prod(y.shape[:-1], dtype=np.int64))
    print(f"  audio: {method} {args.n_iter} iterations, n_fft={n_fft}, hop={hop}{what}: "
          f"{y.shape[-1]} samples ({y.shape[-1] / sample_rate:.2f} s at {sample_rate} Hz), "
          f"spectral convergence against the inverted spectrogram {sc:.4f}")
    peak = float(np.abs(y).max()) if y.size else 0.0
    level = ("peak scaled to 0.99 (--normalize)" if args.normalize else
             f"at the level computed: peak {peak:.3g} of full scale"
             + (", clipped" if peak > 1.0 else ""))
    print(f"  wrote {path} (16-bit PCM, {channels} channel(s), {level})")
    return sc


def _workers(args):
    """Threads a process solves with: --workers, else every core for one process and one a
    process for several (--jobs N processes already use N cores: no oversubscription)."""
    if args.workers is not None:
        if args.workers < 1:
            raise ValueError(f"--workers must be a positive integer, got {args.workers}")
        return args.workers
    return 1 if getattr(args, "jobs", 1) > 1 else None


def _transform(args, n_stft, n_mels, **fb):
    return InverseMelScale(n_stft, n_mels, max_iter=args.max_iter,
                           tolerance_loss=args.tolerance_loss,
                           tolerance_change=args.tolerance_change, solver=args.solver,
                           seed=args.seed, device=args.device, workers=_workers(args), **fb)


def _report(name, mel, S, info, transform):
    print(f"{name}: mel {tuple(mel.shape)} {mel.dtype} -> spectrogram {tuple(S.shape)} {S.dtype}")
    print(f"  solver={transform.solver} device={info.device} time={info.seconds * 1e3:.1f} ms "
          f"iterations/frame: mean {info.iterations.mean():.1f}, max {info.iterations.max()}")
    print(f"  mel residual ||A S - M|| / ||M|| = {info.total_mel_residual:.3e}")


_FILTERBANK = dict(sample_rate=16000, f_min=0.0, f_max=None, norm=None, mel_type="htk")


def _front_end(args):
    """The ``--frontend`` preset with the filterbank and STFT options given on the command line
    as overrides, or None."""
    if args.frontend is None:
        return None
    given = {k: getattr(args, k) for k in (*_FILTERBANK, "hop_length", "win_length", "power",
                                           "n_mels")
             if getattr(args, k) is not None}
    if args.n_stft is not None:
        given["n_fft"] = 2 * (args.n_stft - 1)
    return frontend(args.frontend, **given)


def _settings(args):
    """The run's :class:`cumel._bulk.Settings`; checks the filterbank arguments once."""
    if args.n_iter < 0:
        raise ValueError(f"--n-iter must be an integer >= 0, got {args.n_iter}")
    if args.length is not None and args.length < 1:
        raise ValueError(f"--length must be a positive integer, got {args.length}")
    fe = _front_end(args)
    if fe is None and args.n_stft is None:
        raise ValueError("give --n-stft (n_fft // 2 + 1), or --frontend NAME for a model's "
                         "features (cumel frontends lists them)")
    filterbank = {k: (v if getattr(args, k) is None else getattr(args, k))
                  for k, v in _FILTERBANK.items()}
    transform = dict(filterbank, max_iter=args.max_iter, tolerance_loss=args.tolerance_loss,
                     tolerance_change=args.tolerance_change, solver=args.solver, seed=args.seed,
                     device=args.device, workers=_workers(args))
    n_stft = fe.n_stft if fe is not None else args.n_stft
    n_mels = fe.n_mels if fe is not None else args.n_mels
    settings = _bulk.Settings(n_stft, n_mels, args.key, transform, frontend=fe,
                              wav_only=args.wav_only, length=args.length,
                              normalize=args.normalize)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        settings.build(n_mels if n_mels is not None else 1)   # raises on bad arguments
    if fe is not None:
        first, *rest = fe.describe()
        print(f"cumel: front end {first}", *rest, sep="\n", file=sys.stderr)
    return settings


def _audio(args):
    """Griffin-Lim keywords of ``--wav`` for the bulk run."""
    return dict(hop_length=args.hop_length, win_length=args.win_length, power=args.power,
                n_iter=args.n_iter, length=args.length, seed=args.seed, method=args.method)


def _uses_gpu(device):
    if device == "cuda":
        from ._backend import cupy_module
        cupy_module()            # a clear error now (exit 2) rather than one per file
        return True
    if device == "auto":
        from ._backend import gpu_available
        return gpu_available()
    return False


def invert_one(args, settings):
    """``cumel invert mel.npy -o spec.npy``: exactly that output file, and the solve's report."""
    path = args.inputs[0]
    if args.wav_only and args.output is not None:          # -o names the sound itself
        wav, spectrogram_out = args.output, None
    else:
        wav = (str(args.wav) if args.wav is not True else
               str(Path(args.output).with_suffix(".wav"))) if args.wav else None
        spectrogram_out = args.output
    if args.report is not None:
        _bulk.check_writable(args.report, "--report")
    if args.output is not None:
        _bulk.remove_stale_temporaries([str(Path(args.output).parent)])
    fe = settings.frontend
    try:
        raw = _bulk.load_mel(path, args.key, settings.n_mels, settings.n_stft)
        mel = settings.linear(raw)
        transform = _bulk.transform_for(settings, int(mel.shape[-2]))
        if not args.no_progress:
            transform = copy.copy(transform)
            transform.progress = "auto"              # a bar once the solve takes over 2 s
        S, said = _bulk.solve_quietly(lambda m: transform(m, return_info=True), mel)
        S, info = S
        if said is not None:
            print(f"cumel: warning: {path}: {said}", file=sys.stderr)
        if spectrogram_out is not None:
            _bulk.save_npy(spectrogram_out, S)
    except Exception as exc:             # a row in the report too, then the error (exit 2)
        if args.report is not None:
            _bulk.write_report(args.report, [_bulk.failure(_bulk.Job(path, args.output), exc)],
                               0.0, None, shlex.join(["cumel", *args.argv]))
        raise
    if fe is not None:
        floor = float(np.mean(fe.floor_mask(raw)[..., :mel.shape[-1]]))
        print(f"{path}: {fe.name} features {tuple(raw.shape)}: {percent(floor)} of the values at the "
              "compression's floor (no level below it is known: inverted as silence)"
              + ("; ref=max: the absolute level is lost, the sound comes back at peak 1"
                 if fe.ref == "max" else ""))
    _report(path, mel, S, info, transform)
    if spectrogram_out is not None:
        print(f"  wrote {spectrogram_out}")
    if wav is not None:
        _to_wav(args, wav, S, settings.sample_rate, fe=fe, mel=mel, transform=transform)
    if args.report is not None:
        row = _bulk.Result(path, args.output, "written", _bulk.frames_of(mel.shape), info.seconds,
                           info.total_mel_residual)
        _bulk.write_report(args.report, [row], info.seconds, None, shlex.join(["cumel", *args.argv]))
    return 0


def invert_many(args, settings):
    """``cumel invert PATH... -o OUTDIR``: every file, mirrored under OUTDIR."""
    if args.jobs < 1:
        raise ValueError(f"--jobs must be a positive integer, got {args.jobs}")
    if args.batch_frames is not None and args.batch_frames < 1:
        raise ValueError(f"--batch-frames must be a positive integer, got {args.batch_frames}")
    batch_frames = args.batch_frames
    if _uses_gpu(args.device):
        if args.jobs > 1:
            print("cumel: note: --jobs applies to the CPU; one process feeds the GPU", file=sys.stderr)
        if batch_frames is None and args.solver in _bulk.PER_FRAME_SOLVERS:
            batch_frames = 65536
    if batch_frames is not None and args.solver not in _bulk.PER_FRAME_SOLVERS:
        raise ValueError(f"--batch-frames needs a per-frame solver (nnls or lstsq), got "
                         f"--solver {args.solver}")
    if args.wav not in (None, True):
        raise ValueError(f"--wav {args.wav} names one file: over many inputs give --wav alone "
                         "(each OUTDIR/<name>.wav beside its .npy)")
    if args.wav or args.wav_only:
        settings.audio = _audio(args)
    if args.report is not None:
        _bulk.check_writable(args.report, "--report")        # before any work, not after it
    t0 = time.perf_counter()
    try:
        jobs, problems = _bulk.collect_inputs(args.inputs, args.output)
    except KeyboardInterrupt as exc:      # stopped before any file: the summary all the same
        return _stopped_collecting(args, exc, time.perf_counter() - t0)
    if args.wav_only:                                      # the sound is the output
        jobs = [_bulk.Job(j.input, str(Path(j.output).with_suffix(".wav"))) for j in jobs]
    n_workers = 1 if _uses_gpu(args.device) else args.jobs
    return _bulk.run(jobs, problems, settings, overwrite=args.overwrite, n_workers=n_workers,
                     batch_frames=batch_frames, progress=not args.no_progress,
                     report=args.report, command=shlex.join(["cumel", *args.argv]))


def _stopped_collecting(args, exc, seconds):
    """The summary (and ``--report``) of a run stopped while its inputs were being collected:
    nothing was read or written. Returns the exit status (130 or 143)."""
    signum = _bulk.signal_of(exc)
    print(_bulk.summary_line([], seconds, signum) + "; stopped while collecting the inputs",
          flush=True)
    if args.report is not None:
        _bulk.write_report(args.report, [], seconds, signum, shlex.join(["cumel", *args.argv]))
    return _bulk.exit_status(exc)


def cmd_invert(args):
    if args.method != "griffinlim" and not (args.wav or args.wav_only):
        raise ValueError(f"--method {args.method} makes the sound: give --wav or --wav-only")
    settings = _settings(args)
    if args.wav_only and args.output is None and not isinstance(args.wav, str):
        raise ValueError("--wav-only needs -o (the .wav of one input file, or a folder), or "
                         "--wav OUT.wav with one input file")
    if args.output is None:
        if len(args.inputs) == 1 and isinstance(args.wav, str):
            return invert_one(args, settings)            # sound only
        raise ValueError("give -o/--output (a spectrogram file, or a folder for many inputs), "
                         "or --wav OUT.wav with one input file")
    if _bulk.is_single_file(args.inputs, args.output):
        return invert_one(args, settings)
    return invert_many(args, settings)


def cmd_frontends(args):
    """``cumel frontends``: every preset and its parameters."""
    for fe in frontends().values():
        for line in fe.describe():
            print(line)
    print("use: cumel invert FEATURES.npy --frontend NAME --wav OUT.wav [--length SAMPLES]; in "
          "Python cumel.mel_to_audio(features, frontend=NAME, length=n)")
    return 0


def cmd_demo(args):
    with resources.files("cumel.data").joinpath("demo_speech_mel.npz").open("rb") as f:
        data = np.load(f)
        mel, source = data["mel"], str(data["source"])
    print(f"cumel {__version__} demo: {source}")
    with warnings.catch_warnings():
        # 201 bins x 128 mels leaves the lowest filters empty (torchaudio warns too); say it once
        warnings.simplefilter("ignore", UserWarning)
        transform = _transform(args, 201, 128, sample_rate=16000, f_min=0.0, f_max=8000.0)
        ref = InverseMelScale(201, 128, solver="lstsq")
    empty = int((transform.fb.max(axis=0) == 0).sum())
    print(f"  filterbank 201 bins x 128 HTK mels ({empty} filters empty at this resolution)")
    S, info = transform(mel, return_info=True)
    _report("demo_speech_mel.npz", mel, S, info, transform)
    if transform.solver != "lstsq":
        ref(mel[:, :1])  # builds the cached pseudo-inverse, so the time below is the solve
        _, ref_info = ref(mel, return_info=True)
        print(f"  for comparison, lstsq + relu (torchaudio 2.x): time={ref_info.seconds * 1e3:.1f} ms "
              f"mel residual = {ref_info.total_mel_residual:.3e}")
    if args.wav:
        # the full path: the line says where the file is, whichever folder the demo ran in
        wav = Path("demo_reconstruction.wav" if args.wav is True else args.wav).resolve()
        _to_wav(args, str(wav), S, 16000, hop_default=160, mel=mel, transform=transform)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _build_parser().parse_args(argv)
    args.argv = argv
    try:
        stream_cpu = args.command == "stream" and args.device != "cuda"
        if stream_cpu or (args.command in ("invert", "demo") and args.solver == "nnls"
                          and args.device != "cuda"):
            # the compiled CPU loops' first run compiles them where numba's cache is cold: say so
            from .stream import compiled_module as stream_passes
            also = [stream_passes()] if stream_cpu and stream_passes() is not None else []
            _nnls_chunks.announce_compile(lambda note: print(note, file=sys.stderr, flush=True),
                                          also)
        with _bulk.stop_signals():                 # SIGINT and SIGTERM: a clean stop
            return {"invert": cmd_invert, "frontends": cmd_frontends,
                    "demo": cmd_demo, "stream": _stream_cli.cmd_stream}[args.command](args) or 0
    except (ValueError, TypeError, RuntimeError, OSError, ArithmeticError) as exc:
        print(f"cumel: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError as exc:
        print(f"cumel: error: out of memory{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"cumel: interrupted ({signal.Signals(_bulk.signal_of(exc)).name})", file=sys.stderr)
        return _bulk.exit_status(exc)


if __name__ == "__main__":
    sys.exit(main())
