"""
The folder command line on a small dataset
==========================================

``cumel invert FOLDER -o OUTDIR`` inverts every ``.npy``/``.npz`` under a folder, writes each
output atomically under the same relative path, skips outputs that exist on a re-run, and can
write a JSON report with one row per file. Here: eight clips of synthetic speech as mel
spectrograms in two sub-folders, one deliberately broken file, and the report drawn.
"""
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from cumel.workloads import WORKLOADS, synthetic_audio

# 128 mels over 201 bins leave 4 filters empty: cumel warns once, as torchaudio does; not here.
warnings.filterwarnings("ignore", "At least one mel filterbank has all zero values", UserWarning)

w = WORKLOADS["speech-201x128"]
root = Path(tempfile.mkdtemp())
for i in range(8):
    _, mel = w.pair(synthetic_audio(0.5 + 0.25 * i, w.sample_rate, seed=i))
    folder = root / "mels" / ("train" if i < 6 else "test")
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"clip_{i}.npy", mel)
(root / "mels" / "test" / "broken.npy").write_bytes(b"not a NumPy file")


def cumel_cli(*args):
    """Run the ``cumel`` command (as ``python -m cumel.cli``, the same entry point)."""
    run = subprocess.run([sys.executable, "-m", "cumel.cli", *args], cwd=root,
                         capture_output=True, text=True)
    print(f"$ cumel {' '.join(args)}\n{run.stdout}{run.stderr}exit status {run.returncode}\n")
    return run.returncode


status = cumel_cli("invert", "mels", "-o", "specs", "--n-stft", "201", "--jobs", "2",
                   "--no-progress", "--report", "run.json")

# %%
# A re-run skips the outputs that exist and tries the broken file again.
status = cumel_cli("invert", "mels", "-o", "specs", "--n-stft", "201", "--no-progress")
print(sorted(str(p.relative_to(root)) for p in (root / "specs").rglob("*.npy")))

# %%
# The report: one row per file, with its status, frames, time and mel residual.
rows = json.loads((root / "run.json").read_text())
rows = rows["files"] if isinstance(rows, dict) else rows
done = sorted((r for r in rows if r["status"] == "written"), key=lambda r: r["input"])
print(json.dumps(done[0], indent=1))
print(json.dumps([r for r in rows if r["status"] == "failed"], indent=1))
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
names = [Path(r["input"]).name for r in done]
left.barh(names, [r["frames"] for r in done])
left.set_xlabel("frames")
left.set_title("written files")
right.scatter([r["mel_residual"] for r in done], names, color="C2", zorder=3)
right.axvline(1e-5, color="grey", ls=":", label="tolerance_loss (1e-5)")
right.set_xscale("log")
right.set_xlim(1e-8, 1e-3)
right.grid(True, axis="x", alpha=0.3)
right.legend(fontsize=8)
right.set_xlabel("mel residual ||A S - M|| / ||M||")
right.set_title("each file's mel residual (nnls)")
plt.show()
