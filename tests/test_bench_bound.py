"""The bound of bench/bound.py: each kernel's stated cost model against a device's bandwidth and
FLOP rate. Arithmetic on a made-up device, the CUDA 13 property names, and the kernel headers'
cost lines (every kernel states one, in the grammar)."""
import math

import pytest

from bench import bound
from cumel import cuda
from cumel.workloads import WORKLOADS

# a made-up device: 100 SMs at 1 GHz, 1 TB/s, compute capability 9.0 (256 FP32 and 128 FP64
# flops per clock and SM)
DEVICE = bound.DeviceModel(name="made-up", sm_count=100, clock_hz=1e9, memory_bandwidth=1e12,
                           fp32_flops_per_clock=256, fp64_flops_per_clock=128,
                           compute_capability="9.0")
PEAK32, PEAK64 = 100 * 1e9 * 256, 100 * 1e9 * 128


def model(**fields):
    return bound.CostModel("made-up", **fields)


@pytest.mark.parametrize("B, F", [(1000, 1e3), (10, 1e6), (4096, 2.56e7), (1, 0), (0, 5e4)])
def test_bound_is_min_of_bandwidth_over_bytes_and_peak_over_flops(B, F):
    result = bound.bound(model(frame_bytes=str(B), frame_flops=str(F), math="fp32"), DEVICE,
                         steps=0, item=4)
    expected = min(1e12 / B if B else math.inf, PEAK32 / F if F else math.inf)
    assert result["frames_per_s"] == pytest.approx(expected, rel=1e-12)
    assert result["limit"] == ("memory" if B and (not F or 1e12 / B <= PEAK32 / F) else "compute")


def test_bound_counts_every_iteration_of_a_frame():
    m = model(frame_bytes="100", frame_flops="10", step_bytes="50", step_flops="1e6", math="fp64")
    result = bound.bound(m, DEVICE, steps=7, item=4)
    assert result["bytes_per_frame"] == 100 + 7 * 50
    assert result["flops_per_frame"] == 10 + 7 * 1e6
    assert result["frames_per_s"] == pytest.approx(min(1e12 / 450, PEAK64 / (10 + 7e6)))
    assert result["precision"] == "fp64"


def test_item_precision_and_shape_variables():
    m = model(step_bytes="(2 * n_freqs + n_mels) * item", step_flops="n_fft * log2(n_fft) + hop")
    shape = {"n_mels": 80, "n_freqs": 513, "n_fft": 1024, "hop": 256}
    b, f = m.per_frame(3, item=8, **shape)
    assert b == 3 * (2 * 513 + 80) * 8 and f == 3 * (1024 * 10 + 256)
    assert m.precision(4) == "fp32" and m.precision(8) == "fp64"
    assert bound.bound(m, DEVICE, 3, 8, **shape)["frames_per_s"] == pytest.approx(
        min(1e12 / b, PEAK64 / f))


def test_unknown_flop_rate_gives_no_bound_not_a_wrong_one():
    device = bound.DeviceModel("odd", 10, 1e9, 1e12, None, None, "99.0")
    assert bound.bound(model(frame_flops="1"), device, 0, 4)["frames_per_s"] is None
    assert bound.bound(model(frame_bytes="1"), device, 0, 4)["frames_per_s"] == 1e12


def test_device_model_from_cuda13_properties_and_attributes():
    # CUDA 13 dropped clockRate and memoryClockRate from cudaDeviceProp: the attributes give them
    props = {"name": b"made-up", "multiProcessorCount": 100, "major": 9, "minor": 0,
             "memoryBusWidth": 4000}
    attributes = {"ClockRate": 1_000_000, "MemoryClockRate": 1_000_000}      # kHz
    device = bound.device_model(props, attributes)
    assert device.sm_count == 100 and device.clock_hz == 1e9
    assert device.memory_bandwidth == pytest.approx(1e12)       # 2 x 1 GHz x 500 bytes
    assert device.peak_flops("fp32") == PEAK32 and device.peak_flops("fp64") == PEAK64
    # CUDA 12's properties carry the clocks themselves
    legacy = {**props, "clockRate": 2_000_000, "memoryClockRate": 500_000}
    assert bound.device_model(legacy).clock_hz == 2e9
    assert bound.device_model(legacy).memory_bandwidth == pytest.approx(5e11)
    with pytest.raises(ValueError, match="clockRate nor ClockRate"):
        bound.device_model(props)


def test_stages_in_sequence_add_their_times():
    assert bound.combined(100.0, 100.0) == pytest.approx(50.0)
    assert bound.combined(100.0, None) is None


@pytest.mark.parametrize("line, message", [
    ("// cost k: frame_bytes = n_mels +", "cost expression"),
    ("// cost k: frame_bytes = __import__('os')", "not allowed"),
    ("// cost k: frame_bites = 1", "cannot read"),
    ("// cost k: frame_bytes = 1; frame_bytes = 2", "given twice"),
    ("// cost k: math = fp16", "math must be"),
    ("// cost k: frame_bytes = n_bins", "not allowed"),
])
def test_cost_line_grammar_is_enforced(line, message):
    with pytest.raises(bound.CostModelError, match=message):
        bound.parse_cost_lines(line)


def test_every_kernel_states_a_cost_model_the_bench_can_evaluate():
    models = bound.kernel_cost_models()
    for names in cuda.KERNELS.values():
        for name in names:
            assert name.split("<")[0] in models, f"{name}: no '// cost' line in its header"
    for m in models.values():
        for w in WORKLOADS.values():
            b, f = m.per_frame(10, item=4, n_mels=w.n_mels, n_freqs=w.n_stft, n_fft=w.n_fft,
                               hop=w.hop)
            assert math.isfinite(b) and math.isfinite(f) and b >= 0 and f >= 0 and b + f > 0


# Hand counts from the kernels' own loops (the global arrays each reads and writes, per frame and
# per iteration), for the terms that can be counted exactly; checked at distinct primes so that a
# dropped or changed term shows. n_freqs is the complex bins of a frame for the element-wise
# kernels (each reads and writes its complex arrays as interleaved (re, im): 2 values a bin).
HAND_COUNTS = {
    # nnls_solve: the frame's mel column in (n_mels values) and its answer out (n_freqs), its
    # Newton step count (long long) and KKT residual (double) out; every Newton step works in
    # shared memory and registers only (the filterbank stays in L1/L2): no DRAM traffic a step
    ("nnls_solve", "frame_bytes"): lambda n_mels, n_freqs, item, **_: (n_mels + n_freqs) * item + 8 + 8,
    ("nnls_solve", "step_bytes"): lambda **_: 0,
    # nnls_prior: the same, plus the prior's centre and spread read once (n_freqs each)
    ("nnls_prior", "frame_bytes"): lambda n_mels, n_freqs, item, **_: (n_mels + 3 * n_freqs) * item + 16,
    # lstsq_apply: the mel column in, the answer out; one multiply-add (2 flops) per (mel, bin)
    ("lstsq_apply", "frame_bytes"): lambda n_mels, n_freqs, item, **_: (n_mels + n_freqs) * item,
    ("lstsq_apply", "frame_flops"): lambda n_mels, n_freqs, **_: 2 * n_mels * n_freqs,
    # torchaudio_sgd, a step of a frame: the mel column read (frame_mel_residual), S read and
    # written, the momentum buffer read and written (n_freqs each)
    ("torchaudio_sgd", "step_bytes"): lambda n_mels, n_freqs, item, **_: (n_mels + 4 * n_freqs) * item,
    # mindspore_gd, a step of a frame: the mel column read, x read, x_next written
    ("mindspore_gd", "step_bytes"): lambda n_mels, n_freqs, item, **_: (n_mels + 2 * n_freqs) * item,
    # griffinlim_update, a complex bin: rebuilt (2) and tprev (2) read, mag (1) read, X (2) written
    ("griffinlim_update", "step_bytes"): lambda n_freqs, item, **_: (2 + 2 + 1 + 2) * n_freqs * item,
}
PRIMES = [dict(n_mels=31, n_freqs=211, n_fft=419, hop=103, item=4),
          dict(n_mels=83, n_freqs=1031, n_fft=2053, hop=509, item=8)]


@pytest.mark.parametrize("name, key", list(HAND_COUNTS), ids=[f"{n}-{k}" for n, k in HAND_COUNTS])
def test_cost_lines_equal_the_hand_count_from_the_kernels_loops(name, key):
    model = bound.kernel_cost_models()[name]
    for values in PRIMES:
        stated = bound.evaluate(getattr(model, key), values)
        assert stated == HAND_COUNTS[name, key](**values), (name, key, getattr(model, key), values)


def test_every_loop_of_a_kernel_has_its_term():
    """Where the exact coefficient is a convention (flops of a sqrt, an FFT), every loop still
    costs something: each model's per-step flops grow with every dimension its loops run over
    (bins; mels for the mel-space kernels; the FFT length for the Griffin-Lim and ADMM
    iterations), and so do its per-step or per-frame bytes with the bins."""
    models = bound.kernel_cost_models()
    loops = {"nnls_solve": ("n_freqs", "n_mels"), "nnls_prior": ("n_freqs", "n_mels"),
             "torchaudio_sgd": ("n_freqs", "n_mels"), "mindspore_gd": ("n_freqs", "n_mels"),
             "griffinlim_update": ("n_freqs",), "admm_update": ("n_freqs",),
             "griffinlim_iteration": ("n_freqs", "n_fft"),
             "admm_iteration": ("n_freqs", "n_fft", "n_mels"), "lstsq_apply": ("n_freqs", "n_mels"),
             "nnls_backward": ("n_freqs", "n_mels"), "stream_overlap": ("n_fft",),
             "stream_iteration": ("n_freqs", "n_fft")}
    per_frame = ("lstsq_apply", "nnls_backward")          # one pass a frame: no steps
    assert set(loops) == set(models)
    base = PRIMES[0]
    for name, dims in loops.items():
        m = models[name]
        flops = m.frame_flops if name in per_frame else m.step_flops
        for dim in dims:
            grown = dict(base, **{dim: base[dim] * 2})
            assert bound.evaluate(flops, grown) > bound.evaluate(flops, base), (name, dim, flops)
        # the overlap-add works on samples (n_fft), not bins
        size = "n_fft" if name == "stream_overlap" else "n_freqs"
        grown = dict(base, **{size: base[size] * 2})
        assert (bound.evaluate(m.step_bytes, grown) + bound.evaluate(m.frame_bytes, grown)
                > bound.evaluate(m.step_bytes, base) + bound.evaluate(m.frame_bytes, base)), name
