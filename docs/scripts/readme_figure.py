"""Draw docs/_static/readme_figure.png, the figure of README.md and the documentation's front page.

Run from the repository root with matplotlib installed (``pip install -e '.[docs]'``)::

    python docs/scripts/readme_figure.py
"""
from pathlib import Path

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import cumel  # noqa: E402
from cumel.workloads import WORKLOADS, synthetic_audio  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "_static" / "readme_figure.png"


def main():
    w = WORKLOADS["tts-513x80"]
    S_true, mel = w.pair(synthetic_audio(2.0, w.sample_rate, seed=0))
    A = cumel.MelScale(n_mels=w.n_mels, sample_rate=w.sample_rate, f_max=w.f_max, n_stft=w.n_stft,
                       norm=w.norm, mel_scale=w.mel_scale).fb.T.astype(np.float64)
    panels = {"original power spectrogram (513 bins)": S_true}
    residual = {}
    for label, solver in (("cumel nnls", "nnls"), ("lstsq + relu (torchaudio 2.x)", "lstsq")):
        S = cumel.InverseMelScale(**w.inverse_kwargs(), solver=solver)(mel)
        panels[f"from its 80 mels: {label}"] = S
        residual[label] = (np.linalg.norm(A @ S - mel, axis=0)
                           / np.maximum(np.linalg.norm(mel, axis=0), 1e-30))
    seconds = S_true.shape[1] * w.hop / w.sample_rate
    top = 10 * np.log10(S_true.max())
    fig, axes = plt.subplots(4, 1, figsize=(8, 7.2), sharex=True, constrained_layout=True,
                             gridspec_kw={"height_ratios": [1, 1, 1, 0.9]})
    for ax, (title, S) in zip(axes, panels.items()):
        ax.imshow(10 * np.log10(np.maximum(S, 1e-10)), origin="lower", aspect="auto", cmap="magma",
                  vmin=top - 80, vmax=top, extent=[0, seconds, 0, w.sample_rate / 2000])
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("kHz")
    t = np.arange(mel.shape[1]) * w.hop / w.sample_rate
    for label, r in residual.items():
        axes[-1].semilogy(t, np.maximum(r, 1e-9), label=label)
    axes[-1].set_ylabel("mel residual")
    axes[-1].set_title("each frame's ||A s - m|| / ||m||", fontsize=10)
    axes[-1].legend(fontsize=8, loc="center", ncols=2)
    axes[-1].set_xlabel("time (s)")
    fig.savefig(OUT, dpi=80)
    # a palette of 128 colours keeps the committed file small
    with Image.open(OUT) as image:
        small = image.convert("RGB").quantize(128, method=Image.Quantize.MEDIANCUT)
    small.save(OUT, optimize=True)
    print(f"wrote {OUT.name}")


if __name__ == "__main__":
    main()
