"""``python -m bench frontends``: a model's mel features back to sound, cumel against librosa.

For each front-end preset (``cumel.frontends()``) and clip: the clip's features are computed by
the real front end (transformers' ``WhisperFeatureExtractor``, ``librosa.feature.melspectrogram``
+ ``power_to_db``, ``torchaudio.transforms.MelSpectrogram`` + ``AmplitudeToDB``; HiFi-GAN's
``meldataset.mel_spectrogram`` and Tacotron 2's ``TacotronSTFT`` written out in torch, as they
are not packaged), then turned back into audio of the clip's length by

* cumel: ``cumel.mel_to_audio(features, frontend=name, length=n)``;
* librosa: the features undone by hand (``10 ** (4 f - 4)``, ``exp(f)``, ``10 ** (f / 10)``;
  Whisper's features cut to the frames the clip needs), then ``librosa.feature.inverse.
  mel_to_audio``'s two stages (``mel_to_stft`` + ``griffinlim``, spelt out so the start can be
  seeded) with the front end's STFT settings; for HiFi-GAN, whose frames sit half a hop after
  ``center=True``'s, the output shifted by 128 samples by hand (what a careful user does).

Both at 32 Griffin-Lim iterations, momentum 0.99. Reported: spectral convergence
``|| |STFT(y)| - |STFT(x)| ||_F / || |STFT(x)| ||_F`` against the clip (cumel's STFT at the front
end's n_fft and hop, centred), mean over ``--seeds`` start seeds, and the median wall time of
the whole pipeline (undoing included) over ``--repeats`` runs after a warm-up. 16 kHz presets
take the speech clips as they are; 22.05 kHz ones the same clips resampled (scipy's
``resample_poly``, 441/320). Writes ``results.json`` and ``results.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import cumel
from cumel.workloads import read_wav

from . import environment, report

DEFAULT_OUT = Path(__file__).resolve().parent / "out_frontends"


# -- the real front ends ---------------------------------------------------------------------------

def whisper(x, n_mels=80):
    from transformers import WhisperFeatureExtractor
    return WhisperFeatureExtractor(feature_size=n_mels)(
        x, sampling_rate=16000, return_tensors="np").input_features[0]


def librosa_db(x):
    import librosa
    return librosa.power_to_db(librosa.feature.melspectrogram(y=x, sr=22050))


def torchaudio_db(x):
    import torch
    import torchaudio
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # 128 mels x 201 bins: empty filters
        return torchaudio.transforms.AmplitudeToDB("power")(
            torchaudio.transforms.MelSpectrogram()(torch.from_numpy(x))).numpy()


def hifigan(x):
    """HiFi-GAN meldataset.mel_spectrogram (config v1); the same code as in
    tests/test_frontends_peers.py."""
    import librosa
    import torch
    n_fft, hop, win = 1024, 256, 1024
    mel_basis = torch.from_numpy(librosa.filters.mel(sr=22050, n_fft=n_fft, n_mels=80, fmin=0,
                                                     fmax=8000)).float()
    y = torch.nn.functional.pad(torch.from_numpy(x)[None, None], ((n_fft - hop) // 2,
                                                                  (n_fft - hop) // 2),
                                mode="reflect").squeeze(1)
    spec = torch.stft(y, n_fft, hop_length=hop, win_length=win, window=torch.hann_window(win),
                      center=False, pad_mode="reflect", normalized=False, onesided=True,
                      return_complex=True)
    spec = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
    return torch.log(torch.clamp(torch.matmul(mel_basis, spec), min=1e-5))[0].numpy()


def tacotron2(x):
    """Tacotron 2 stft.STFT.transform (conv1d Fourier basis, reflect pad n_fft / 2) +
    TacotronSTFT.mel_spectrogram; the same code as in tests/test_frontends_peers.py."""
    import librosa
    import torch
    from scipy.signal import get_window
    n_fft, hop = 1024, 256
    basis = np.fft.fft(np.eye(n_fft))
    cutoff = n_fft // 2 + 1
    basis = np.vstack([np.real(basis[:cutoff]), np.imag(basis[:cutoff])])
    forward = torch.FloatTensor(basis[:, None, :]) * torch.from_numpy(
        librosa.util.pad_center(get_window("hann", n_fft, fftbins=True), size=n_fft)).float()
    y = torch.nn.functional.pad(torch.from_numpy(x)[None, None, None], (n_fft // 2, n_fft // 2, 0, 0),
                                mode="reflect").squeeze(1)
    out = torch.nn.functional.conv1d(y, forward, stride=hop, padding=0)
    magnitude = torch.sqrt(out[:, :cutoff] ** 2 + out[:, cutoff:] ** 2)
    mel_basis = torch.from_numpy(librosa.filters.mel(sr=22050, n_fft=n_fft, n_mels=80, fmin=0.0,
                                                     fmax=8000.0)).float()
    return torch.log(torch.clamp(torch.matmul(mel_basis, magnitude), min=1e-5))[0].numpy()


REAL = {"whisper": ("transformers WhisperFeatureExtractor", whisper),
        "whisper-128": ("transformers WhisperFeatureExtractor(feature_size=128)",
                        lambda x: whisper(x, 128)),
        "hifigan": ("HiFi-GAN meldataset.mel_spectrogram (torch)", hifigan),
        "tacotron2": ("Tacotron 2 TacotronSTFT (torch)", tacotron2),
        "librosa": ("librosa melspectrogram + power_to_db", librosa_db),
        "torchaudio": ("torchaudio MelSpectrogram + AmplitudeToDB", torchaudio_db)}


# -- librosa on the features undone by hand ------------------------------------------------------

def undone_by_hand(name, features, n):
    f = features.astype(np.float64)
    if name.startswith("whisper"):
        return 10.0 ** (4 * f - 4)[:, :1 + n // 160], dict(
            sr=16000, n_fft=400, hop_length=160, power=2.0, htk=False, norm="slaney", fmax=8000,
            pad_mode="reflect")
    if name in ("hifigan", "tacotron2"):
        return np.exp(f), dict(sr=22050, n_fft=1024, hop_length=256, power=1.0, htk=False,
                               norm="slaney", fmax=8000, pad_mode="reflect")
    if name == "librosa":
        return 10.0 ** (f / 10), dict(sr=22050, n_fft=2048, hop_length=512, power=2.0, htk=False,
                                      norm="slaney", fmax=11025, pad_mode="constant")
    return 10.0 ** (f / 10), dict(sr=16000, n_fft=400, hop_length=200, power=2.0, htk=True,
                                  norm=None, fmax=8000, pad_mode="reflect")


def librosa_audio(name, features, n, seed):
    import librosa
    mel, kw = undone_by_hand(name, features, n)
    S = librosa.feature.inverse.mel_to_stft(mel.astype(np.float32), sr=kw["sr"],
                                            n_fft=kw["n_fft"], power=kw["power"], htk=kw["htk"],
                                            norm=kw["norm"], fmin=0.0, fmax=kw["fmax"])
    y = librosa.griffinlim(S, n_iter=32, hop_length=kw["hop_length"], n_fft=kw["n_fft"],
                           length=None if name == "hifigan" else n, pad_mode=kw["pad_mode"],
                           momentum=0.99, init="random", random_state=seed)
    if name == "hifigan":
        y = np.concatenate([np.zeros(128, y.dtype), y, np.zeros(n, y.dtype)])[:n]
    return y


def cumel_audio(name, features, n, seed):
    return cumel.mel_to_audio(features, frontend=name, length=n, seed=seed)


# -- the run -----------------------------------------------------------------------------------------

def clips_for(rate, audio_dir, count, seconds=None):
    paths = sorted(Path(audio_dir).glob("speech_*.wav"))[:count]
    if not paths:
        raise FileNotFoundError(f"no speech_*.wav in {audio_dir}")
    out = []
    for path in paths:
        x, r = read_wav(path)
        if seconds is not None:
            x = x[:int(seconds * r)]
        if r != rate:
            from scipy.signal import resample_poly
            g = math.gcd(r, rate)
            x = resample_poly(x, rate // g, r // g)
        out.append((path.stem, np.asarray(x, np.float32)))
    return out


def measure(impl, name, features, x, fe, seeds, repeats):
    n = len(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ys = [impl(name, features, n, s) for s in seeds]        # the first is the warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            impl(name, features, n, seeds[0])
            times.append(time.perf_counter() - t0)
    scs = [cumel.spectral_convergence(y, x, fe.n_fft, fe.hop_length) for y in ys]
    assert all(np.shape(y) == (n,) for y in ys)
    return {"seconds": statistics.median(times), "seconds_all": times,
            "spectral_convergence": statistics.mean(scs), "spectral_convergence_seeds": scs}


def markdown(results):
    env, st = results["environment"], results["settings"]
    lines = ["# Front ends: features back to audio (32 Griffin-Lim iterations, momentum 0.99)", "",
             f"- command: `{env['command']}`", f"- when: {env['timestamp']}",
             f"- CPU: {env['cpu']} ({env['cores']} cores)",
             "- " + ", ".join(f"{k} {v}" for k, v in sorted(env["versions"].items())),
             f"- cumel source: commit {(env.get('cumel_source') or {}).get('commit', '?')[:10]}",
             f"- load average (1, 5, 15 min) at start {env.get('load_average')}, at end "
             f"{env.get('load_average_after')}",
             f"- spectral convergence against the clip, mean over seeds {st['seeds']} (min-max in "
             f"brackets); time: median of {st['repeats']} runs after a warm-up, whole pipeline", "",
             "| preset | real front end | clip | frames | cumel SC | librosa SC | cumel (s) | "
             "librosa (s) | cumel / librosa time |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def sc(r):
        v = r["spectral_convergence_seeds"]
        return f"{r['spectral_convergence']:.4f} [{min(v):.4f}-{max(v):.4f}]"

    for r in results["rows"]:
        c, lb = r["cumel"], r["librosa"]
        lines.append(f"| {r['preset']} | {r['front_end']} | {r['clip']} ({r['seconds_audio']:.1f} s) | "
                     f"{r['frames']} | {sc(c)} | {sc(lb)} | {c['seconds']:.3f} | {lb['seconds']:.3f} | "
                     f"{c['seconds'] / lb['seconds']:.2f} |")
    for r in results.get("skipped", []):
        lines.append(f"| {r['preset']} | not installed: {r['error']} | {r['clip']} | - | - | - | - | - | - |")
    return "\n".join(lines) + "\n"


def build_parser():
    p = argparse.ArgumentParser(prog="python -m bench frontends", description=__doc__.split("\n")[0])
    p.add_argument("--audio", metavar="DIR", required=True, help="folder with speech_*.wav")
    p.add_argument("--presets", default="all", help="comma list of presets, or all (default)")
    p.add_argument("--clips", type=int, default=2, metavar="K", help="first K speech clips")
    p.add_argument("--seconds", type=float, default=None, metavar="S",
                   help="only the first S seconds of each clip (default: all of it)")
    p.add_argument("--seeds", type=int, default=3, metavar="K", help="start seeds 0..K-1")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(DEFAULT_OUT), metavar="DIR")
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    presets = list(REAL) if args.presets == "all" else [p.strip() for p in args.presets.split(",")]
    bad = [p for p in presets if p not in REAL]
    if bad:
        parser.error(f"--presets: unknown {', '.join(bad)}; choose from {', '.join(REAL)}")
    env = environment.collect(["python", "-m", "bench", "frontends", *argv])
    try:
        env["versions"]["transformers"] = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        pass
    seeds = list(range(args.seeds))
    results = {"environment": env, "settings": {"seeds": seeds, "repeats": args.repeats,
                                                "clips": args.clips, "seconds": args.seconds,
                                                "presets": presets,
                                                "audio": environment.portable_path(args.audio)},
               "rows": [], "skipped": []}
    for name in presets:
        fe = cumel.frontend(name)
        label, real = REAL[name]
        for clip, x in clips_for(fe.sample_rate, args.audio, args.clips, args.seconds):
            try:
                features = real(x)
            except ImportError as exc:          # that front end's library is not installed
                print(f"[{name}/{clip}] skipped: {exc}", file=sys.stderr, flush=True)
                results["skipped"].append({"preset": name, "clip": clip, "error": str(exc)})
                continue
            row = {"preset": name, "front_end": label, "clip": clip,
                   "seconds_audio": len(x) / fe.sample_rate, "frames": int(features.shape[-1]),
                   "cumel": measure(cumel_audio, name, features, x, fe, seeds, args.repeats),
                   "librosa": measure(librosa_audio, name, features, x, fe, seeds, args.repeats)}
            results["rows"].append(row)
            print(f"[{name}/{clip}] cumel SC {row['cumel']['spectral_convergence']:.4f} "
                  f"{row['cumel']['seconds']:.3f} s; librosa SC "
                  f"{row['librosa']['spectral_convergence']:.4f} {row['librosa']['seconds']:.3f} s",
                  file=sys.stderr, flush=True)
    env["load_average_after"] = environment.load_average()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(results, out)
    text = markdown(results)
    (out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
