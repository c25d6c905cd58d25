"""
Frames per second against batch size
====================================

How fast the CPU path inverts as the batch grows: ``nnls`` and ``lstsq`` on the bundled mel
spectrogram (speech-201x128), tiled to batches of 100 to 6,400 frames, and Griffin-Lim on the
same frames. Measured on the machine that builds these pages (the best of three calls; a shared
machine moves these numbers); :doc:`/benchmarks` holds the committed runs.
"""
import time
import warnings
from importlib import resources

import matplotlib.pyplot as plt
import numpy as np

import cumel

# 128 mels over 201 bins leave 4 filters empty: cumel warns once, as torchaudio does; not here.
warnings.filterwarnings("ignore", "At least one mel filterbank has all zero values", UserWarning)
with resources.files("cumel.data").joinpath("demo_speech_mel.npz").open("rb") as f:
    mel = np.load(f)["mel"]                         # (128, 400), float32
inverses = {solver: cumel.InverseMelScale(201, 128, solver=solver) for solver in ("nnls", "lstsq")}
griffin_lim = cumel.GriffinLim(n_fft=400, hop_length=160, n_iter=8, seed=0)


def best_of(call, repeats=3):
    call()                                          # warm-up: plans, FFT caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


sizes = [100, 200, 400, 800, 1600, 3200, 6400]
rates = {name: [] for name in ("nnls", "lstsq", "Griffin-Lim, 8 iterations")}
for frames in sizes:
    batch = np.tile(mel, (1, -(-frames // mel.shape[1])))[:, :frames]
    S = inverses["nnls"](batch)
    for solver, inverse in inverses.items():
        rates[solver].append(frames / best_of(lambda: inverse(batch)))
    rates["Griffin-Lim, 8 iterations"].append(frames / best_of(lambda: griffin_lim(S), repeats=1))
    print(f"{frames:5d} frames: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items()))

# %%
fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
for name, values in rates.items():
    ax.loglog(sizes, values, "o-", label=name)
ax.set_xlabel("batch size (frames)")
ax.set_ylabel("frames per second")
ax.set_title("CPU, speech-201x128 (201 bins, 128 mels)")
ax.grid(True, which="both", alpha=0.3)
ax.legend()
plt.show()
