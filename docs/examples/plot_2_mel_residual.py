"""
The mel residual of every frame, for every solver
=================================================

How much of each frame's mel the recovered spectrogram fails to explain,
``||A s_t - m_t|| / ||m_t||``, on the tts-513x80 workload (2 s of synthetic speech). cumel's
solvers always run; the peers' methods (librosa's ``mel_to_stft``, torchaudio's
``InverseMelScale``) are added where those libraries are installed.
"""
import matplotlib.pyplot as plt
import numpy as np

import cumel
from cumel.workloads import WORKLOADS, synthetic_audio

workload = WORKLOADS["tts-513x80"]
audio = synthetic_audio(2.0, workload.sample_rate, seed=0)
S_true, mel = workload.pair(audio)
A = cumel.MelScale(n_mels=workload.n_mels, sample_rate=workload.sample_rate,
                   f_max=workload.f_max, n_stft=workload.n_stft, norm=workload.norm,
                   mel_scale=workload.mel_scale).fb.T.astype(np.float64)


def frame_residual(S):
    S = np.asarray(S, np.float64).reshape(S_true.shape)
    return np.linalg.norm(A @ S - mel, axis=0) / np.maximum(np.linalg.norm(mel, axis=0), 1e-30)


curves = {}
for name, kwargs in {"cumel nnls": dict(solver="nnls"), "cumel lstsq": dict(solver="lstsq"),
                     "cumel torchaudio (200 it.)": dict(solver="torchaudio", max_iter=200, seed=0),
                     "cumel mindspore (200 it.)": dict(solver="mindspore", max_iter=200, seed=0)
                     }.items():
    curves[name] = frame_residual(cumel.InverseMelScale(**workload.inverse_kwargs(), **kwargs)(mel))

# %%
# The peers, where installed (the build of these pages passes without them).
try:
    import librosa
    from librosa.feature.inverse import mel_to_stft
except ImportError:
    print("librosa is not installed: its row is left out")
else:
    S = mel_to_stft(mel, sr=workload.sample_rate, n_fft=workload.n_fft, power=2.0, htk=False,
                    norm="slaney", fmax=workload.f_max)
    curves[f"librosa {librosa.__version__} mel_to_stft"] = frame_residual(S ** 2)
try:
    import torch
    import torchaudio
    from torchaudio.transforms import InverseMelScale as TorchaudioInverseMelScale
except ImportError:
    print("torch/torchaudio is not installed: its row is left out")
else:
    inverse = TorchaudioInverseMelScale(
        n_stft=workload.n_stft, n_mels=workload.n_mels, sample_rate=workload.sample_rate,
        f_max=workload.f_max, norm=workload.norm, mel_scale=workload.mel_scale, driver="gelsd")
    curves[f"torchaudio {torchaudio.__version__} InverseMelScale"] = frame_residual(
        inverse(torch.from_numpy(mel)).numpy())

for name, r in curves.items():
    print(f"{name:40s} median {np.median(r):.1e}   worst {r.max():.1e}")

# %%
# On a log scale: ``nnls`` is at or below its tolerance (1e-5, dotted) on every frame; ``lstsq``
# leaves about 10 % of most frames unexplained, and the SGD loops, 200 iterations from a random
# start, have barely begun (their two curves lie on each other; in the pauses, where the mel is
# almost zero, their random start is many times the mel itself).
t = np.arange(mel.shape[1]) * workload.hop / workload.sample_rate
fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
for (name, r), style in zip(curves.items(), ["-", "-", "-", "--", "-.", ":"]):
    ax.semilogy(t, np.maximum(r, 1e-9), style, label=name, lw=1.8 if "nnls" in name else 1.2)
ax.axhline(1e-5, color="grey", ls=":", lw=1)
ax.set_xlabel("time (s)")
ax.set_ylabel("||A s - m|| / ||m|| of the frame")
fig.legend(loc="outside upper center", ncols=2, fontsize=8)
plt.show()
