"""``python -m bench kernels``: ptxas's figures for every kernel on sm_80 and sm_90 (NVRTC, no GPU)
and the occupancy arithmetic. Every kernel compiles with no spills and no stack frame."""
import re

import numpy as np
import pytest

import cumel
from bench import kernels
from cumel import cuda
from cumel.workloads import WORKLOADS

CASES = [pytest.param(source, coop, arch, id=f"{source}-{'coop' if coop else 'plain'}-{arch}")
         for (source, coop) in cuda.KERNELS for arch in ("sm_80", "sm_90")]


def _ptxas(source, coop, arch):
    try:
        return kernels.ptxas_info(source, coop, arch)
    except kernels.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("source, coop, arch", CASES)
def test_no_spills_and_no_stack_frame(source, coop, arch):
    info = _ptxas(source, coop, arch)
    assert set(info) == set(cuda.KERNELS[(source, coop)])
    for name, figures in info.items():
        assert 0 < figures["registers"] <= 255, (name, figures)
        assert figures["spill_stores"] == 0 and figures["spill_loads"] == 0, (name, arch, figures)
        assert figures["stack"] == 0, (name, arch, figures)


def test_report_rows_cover_every_kernel_arch_and_workload():
    try:
        result = kernels.report()
    except kernels.Unavailable as exc:
        pytest.skip(str(exc))
    expected = {(s, c, n, a) for (s, c), names in cuda.KERNELS.items() for n in names
                for a in kernels.ARCHS}
    assert {(r["source"], r["cooperative"], r["kernel"], r["arch"]) for r in result["rows"]} \
        == expected
    for row in result["rows"]:
        assert set(row["workloads"]) == set(WORKLOADS)
        for occ in row["workloads"].values():
            assert "error" not in occ, (row["kernel"], occ)      # block_geometry knows it
            assert 0 < occ["warps"] <= 64 and occ["limited_by"]
    table = kernels.markdown(result, only_float=True)
    assert "nnls_solve<float>" in table and "<double>" not in table


def test_occupancy_arithmetic_on_published_limits():
    sm90 = kernels.ARCHS["sm_90"]
    # 96 registers, 4 warps a block: 3072 registers a warp, 5 warps in each of the 4 register
    # sub-partitions (16384 each) = 20 warps = 5 blocks; 30 KB of shared memory would allow 7
    occ = kernels.occupancy(sm90, registers=96, threads=128, static_shared=0,
                            dynamic_shared=30 * 1024)
    assert (occ["blocks"], occ["warps"], occ["limited_by"]) == (5, 20, ["registers"])
    assert occ["by_shared_memory"] == 228 * 1024 // (31 * 1024)
    # 32 registers, 8 warps a block: threads limit at 8 blocks = 64 warps (registers allow 8 too)
    occ = kernels.occupancy(sm90, 32, 256, 0, 0)
    assert occ["warps"] == 64 and set(occ["limited_by"]) == {"registers", "threads"}
    # shared memory: 100 KB + 1 KB reserved -> 2 blocks on sm_90, 1 on sm_80
    assert kernels.occupancy(sm90, 32, 32, 0, 100 * 1024)["blocks"] == 2
    assert kernels.occupancy(kernels.ARCHS["sm_80"], 32, 32, 0, 100 * 1024)["blocks"] == 1
    # past the per-block maximum, or past 255 registers: nothing fits
    assert kernels.occupancy(sm90, 32, 32, 0, 228 * 1024)["blocks"] == 0
    assert kernels.occupancy(sm90, 256, 32, 0, 0)["blocks"] == 0
    # tiny blocks: 32 blocks an SM at most
    assert kernels.occupancy(sm90, 16, 32, 0, 0)["blocks"] == 32


def test_occupancy_counts_a_partial_warp_as_a_whole_one():
    """A block of 80 threads takes 3 warps (the last one partly idle), of 1 thread one warp:
    64 registers a thread -> 2048 a warp, 8 warps per sub-partition = 32 warps = 10 blocks
    of 3 warps (threads alone would allow 64 // 3 = 21)."""
    sm90 = kernels.ARCHS["sm_90"]
    occ = kernels.occupancy(sm90, registers=64, threads=80, static_shared=0, dynamic_shared=0)
    assert (occ["blocks"], occ["warps"], occ["limited_by"]) == (10, 30, ["registers"])
    assert occ["occupancy"] == 30 / 64 and occ["by_threads"] == 21
    occ = kernels.occupancy(sm90, registers=16, threads=1, static_shared=0, dynamic_shared=0)
    assert (occ["blocks"], occ["warps"], occ["occupancy"]) == (32, 32, 0.5)


def test_ptxas_log_is_parsed_per_entry_function():
    log = """ptxas info    : 36 bytes gmem
ptxas info    : Compiling entry function '_Z1av' for 'sm_90'
ptxas info    : Function properties for _Z1av
ptxas         .     8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 272 bytes smem
ptxas info    : Compiling entry function '_Z1bv' for 'sm_90'
ptxas info    : Function properties for _Z1bv
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 40 registers, used 0 barriers, 400 bytes cmem[0]
"""
    parsed = kernels.parse_ptxas(log)
    assert parsed["_Z1av"] == {"registers": 255, "spill_stores": 4, "spill_loads": 12,
                               "stack": 8, "static_shared": 272}
    assert parsed["_Z1bv"]["registers"] == 40 and parsed["_Z1bv"]["static_shared"] == 0
    assert kernels.has_spills_or_stack({**parsed["_Z1av"]})
    assert not kernels.has_spills_or_stack({**parsed["_Z1bv"]})


@pytest.mark.emulated
def test_launch_geometry_matches_what_the_launchers_use(emulated_cupy):
    """block_geometry (what bench kernels reports) is what the launches use."""
    cp = emulated_cupy
    w = WORKLOADS["speech-201x128"]
    rng = np.random.default_rng(0)
    mel = cp.asarray(rng.random((1, w.n_mels, 6)).astype(np.float32))
    for solver, kernel in (("nnls", "nnls_solve"), ("lstsq", "lstsq_apply"),
                           ("torchaudio", "torchaudio_sgd"), ("mindspore", "mindspore_gd")):
        fixed = {"max_iter": 2} if solver in ("torchaudio", "mindspore") else {}
        inv = cumel.InverseMelScale(**w.inverse_kwargs(), solver=solver, **fixed)
        inv(mel)
        name, _, block, smem = cp.cudasim.last_launch
        assert re.match(kernel, name), name
        assert (block[0], smem) == cuda.launch.block_geometry(kernel, w.n_mels, w.n_stft, 4)
    spec = cp.asarray(rng.random((1, 33, 6)).astype(np.float32))
    cumel.GriffinLim(64, n_iter=1, hop_length=16, seed=0)(spec)
    name, _, block, smem = cp.cudasim.last_launch
    assert name.startswith("griffinlim_update")
    assert (block[0], smem) == cuda.launch.block_geometry("griffinlim_update", 0, 33, 4)
