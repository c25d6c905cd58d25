"""
A model's features back to sound: Whisper and HiFi-GAN
======================================================

Models do not hold linear mels: Whisper's encoder takes clamped, scaled ``log10`` mels padded to
30 s, HiFi-GAN (and VITS, BigVGAN) natural-log magnitude mels on a ``center=False`` grid. Name
the front end and cumel undoes its compression, inverts the mel scale on its filterbank and runs
Griffin-Lim on its frame grid, so the sound lines up with the clip the features came from.

The features here are computed by cumel's own restatement of each front end
(:meth:`cumel.Frontend.features`, equal to the real ones to float32 rounding); features from
``transformers.WhisperFeatureExtractor`` or HiFi-GAN's ``mel_spectrogram`` are used the same way.
"""
import matplotlib.pyplot as plt
import numpy as np

import cumel
from cumel.workloads import synthetic_audio

results = {}
for name in ("whisper", "hifigan"):
    fe = cumel.frontend(name)
    x = synthetic_audio(1.5, fe.sample_rate, seed=2)
    features = fe.features(x)                          # what the model would be given
    y = cumel.mel_to_audio(features, frontend=name, length=x.size, seed=0)
    sc = cumel.spectral_convergence(y, x, fe.n_fft, fe.hop_length)
    results[name] = (fe, x, features, y, sc)
    print(f"{name:8s} features {features.shape}, audio {y.shape} at {fe.sample_rate} Hz, "
          f"spectral convergence {sc:.3f}")

# %%
# Whisper's features always have 3000 frames (30 s of padding); only the frames covering the
# clip's ``length`` are inverted, and only those are drawn. On the right the whole clip, the
# original and the recovered sound over each other: Griffin-Lim finds its own phases, so the
# samples differ, but the sound sits at the same times as the original (each front end's own
# frame grid is used).
fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), constrained_layout=True)
for row, (name, (fe, x, features, y, sc)) in zip(axes, results.items()):
    frames = min(features.shape[-1], 1 + x.size // fe.hop_length)
    row[0].imshow(features[:, :frames], origin="lower", aspect="auto", cmap="magma")
    row[0].set_title(f"{name}: the model's features ({features.shape[0]} mels)")
    row[0].set_xlabel("frame")
    row[0].set_ylabel("mel")
    t = np.arange(x.size) / fe.sample_rate
    row[1].plot(t, x, label="original", lw=0.6)
    row[1].plot(t, y, label="from the features", lw=0.6, alpha=0.7)
    row[1].set_title(f"{name}: sound (spectral convergence {sc:.3f})")
    row[1].set_xlabel("time (s)")
    row[1].legend(fontsize=8, loc="upper right")
plt.show()
