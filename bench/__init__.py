"""Benchmark harness: cumel's solvers against their peers, on the CPU and on CUDA.

Run ``python -m bench --help`` from the repository root. The harness needs NumPy and cumel only;
each peer (PyTorch, torchaudio, MindSpore, librosa) is timed when it is importable, either in
this interpreter or, with ``--python-for PEER=/path/to/python``, in a worker subprocess of
another interpreter (``python -m bench.worker``), and is reported as a skipped row otherwise.

Modules
-------
batches
    The inputs: a workload's mel batch ``(B, n_mels, T)`` and its true power spectrogram.
implementations
    What is timed: cumel's four solvers and the peers, each turned into a :class:`Solve`.
measure
    The one timing function and the one row builder.
worker
    Runs rows in another interpreter (data as ``.npz``, rows back as JSON).
environment
    CPU, GPU, interpreter and library versions.
report
    JSON, Markdown tables and the PNG plot.
audio
    ``python -m bench audio`` (or ``python -m bench.audio``): mel spectrogram -> audio with
    Griffin-Lim, cumel against librosa and torchaudio (spectral convergence and time).
frontends
    ``python -m bench frontends``: features of the real front ends (Whisper, HiFi-GAN,
    Tacotron 2, librosa, torchaudio) back to audio, cumel's ``mel_to_audio(frontend=...)``
    against librosa's ``mel_to_audio`` on the features undone by hand.
torch_sgd
    torchaudio 0.8's ``InverseMelScale`` loop written in PyTorch (removed from torchaudio in 2.1).
gpu
    ``python -m bench gpu``: every GPU number in one call within a time budget (pytest -m gpu,
    the kernel table, every GPU path and peer timed against the device's bound); a package, a
    module per part (its docstring lists them); ``gpu_report`` writes its files, ``png`` draws
    the plot where matplotlib is missing.
kernels
    ``python -m bench kernels``: ptxas figures and occupancy of every kernel, no GPU needed.
bound
    The kernels' stated cost models (``// cost`` lines) against a device: frames/s it allows.
"""
