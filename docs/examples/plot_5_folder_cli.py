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
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from cumel.workloads import WORKLOADS, synthetic_audio

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


cumel_cli("invert", "mels", "-o", "specs", "--n-stft", "201", "--jobs", "2", "--no-progress",
          "--report", "run.json")

# %%
# A re-run skips the outputs that exist and tries the broken file again.
cumel_cli("invert", "mels", "-o", "specs", "--n-stft", "201", "--no-progress")
print(sorted(str(p.relative_to(root)) for p in (root / "specs").rglob("*.npy")))

# %%
# The report: one row per file, with its status, frames, time and mel residual.
rows = json.loads((root / "run.json").read_text())
rows = rows["files"] if isinstance(rows, dict) else rows
print(json.dumps(rows[0], indent=1))
done = [r for r in rows if r["status"] == "written"]
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
names = [Path(r["input"]).name for r in done]
left.barh(names, [r["frames"] for r in done])
left.set_xlabel("frames")
left.set_title("written files")
right.barh(names, [r["mel_residual"] for r in done], color="C2")
right.set_xscale("log")
right.set_xlabel("mel residual ||A S - M|| / ||M||")
right.set_title("each file's mel residual (nnls)")
plt.show()
