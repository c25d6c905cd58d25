"""Every CUDA kernel instantiation compiles through NVRTC, without a GPU, with no warning.

NVRTC runs on the host: ``cupy_backends.cuda.libs.nvrtc`` compiles with no device or driver
(``cupy.cuda.compiler`` would ask the device for its architecture). The options are the ones
``cumel.cuda`` uses at run time, plus the include folders CuPy adds itself at run time (its
bundled CCCL and the CUDA headers of the ``nvidia-cuda-runtime`` wheel), an explicit
architecture and warnings-as-errors. Each architecture the installed NVRTC cannot target is
skipped with the reason (CUDA 13 dropped sm_70; ``.ci/run`` compiles sm_70 with CUDA 12's NVRTC).
"""
import glob
import os

import pytest

from cumel import cuda

nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc",
                            reason="needs cupy and nvidia-cuda-nvrtc (the test extra)")
try:
    NVRTC_VERSION = nvrtc.getVersion()
except Exception as exc:  # library missing: say so instead of failing obscurely
    pytest.skip(f"NVRTC library not loadable: {exc}", allow_module_level=True)

ARCHS = ("sm_70", "sm_80", "sm_90")
# NVRTC 12 prints this for sm_70 and has no option to silence it; anything else fails the test.
ALLOWED_NOISE = ("nvrtc: warning: Architectures prior to '<compute/sm>_75' are deprecated",)


def _has(folder, rel):
    return bool(folder) and os.path.isfile(os.path.join(folder, rel))


def cuda_include_dir():
    """Folder with cooperative_groups.h: the cudart headers CuPy itself would use."""
    try:
        from cuda.pathfinder import find_nvidia_header_directory
        folder = find_nvidia_header_directory("cudart")
        if _has(folder, "cooperative_groups.h"):
            return folder
    except Exception:
        pass
    candidates = []
    try:
        import nvidia
        for base in nvidia.__path__:
            candidates += sorted(glob.glob(os.path.join(base, "cu[0-9]*", "include")), reverse=True)
            candidates.append(os.path.join(base, "cuda_runtime", "include"))
    except ImportError:
        pass
    for folder in candidates:
        if _has(folder, "cooperative_groups.h"):
            return folder
    pytest.skip("CUDA headers not found: pip install 'nvidia-cuda-runtime==13.*' (the test extra)")


def cupy_include_options():
    import cupy
    include = os.path.join(os.path.dirname(cupy.__file__), "_core", "include")
    cccl = os.path.join(include, "cupy", "_cccl")
    return (f"-I{cccl}/cub", f"-I{cccl}/thrust", f"-I{cccl}/libcudacxx", f"-I{include}")


def strict_options(arch):
    options = ()
    if NVRTC_VERSION >= (13, 0):            # NVRTC 12 has no -Werror: the empty log is the check
        options += ("-Werror=all-warnings",)
    return options + ("-Xptxas=--warning-as-error",)


def supported(arch):
    return int(arch.split("_")[1]) in nvrtc.getSupportedArchs()


CASES = [pytest.param(src, coop, arch, id=f"{src}-{'coop' if coop else 'plain'}-{arch}")
         for (src, coop) in cuda.KERNELS for arch in ARCHS]


@pytest.mark.parametrize("source_name, cooperative, arch", CASES)
def test_kernel_compiles_without_warnings(source_name, cooperative, arch):
    if not supported(arch):
        pytest.skip(f"NVRTC {NVRTC_VERSION} cannot target {arch} "
                    f"(supported: {nvrtc.getSupportedArchs()})")
    names = cuda.KERNELS[(source_name, cooperative)]
    options = (cupy_include_options() + cuda.compile_options()
               + (f"-I{cuda_include_dir()}", f"--gpu-architecture={arch}")
               + strict_options(arch))
    prog = nvrtc.createProgram(cuda.module_code(source_name), source_name, (), ())
    try:
        for name in names:
            nvrtc.addNameExpression(prog, name)
        try:
            nvrtc.compileProgram(prog, options)
        except nvrtc.NVRTCError as exc:
            pytest.fail(f"{source_name} for {arch}: {exc}\n{nvrtc.getProgramLog(prog)}")
        log = nvrtc.getProgramLog(prog).replace("\x00", "")
        noise = [line for line in log.splitlines()
                 if line.strip() and not line.startswith(ALLOWED_NOISE)]
        assert not noise, f"NVRTC {NVRTC_VERSION} warnings for {arch}:\n" + "\n".join(noise)
        lowered = {name: nvrtc.getLoweredName(prog, name) for name in names}
        assert all(v.startswith("_Z") for v in lowered.values()), lowered
        assert nvrtc.getCUBIN(prog)[:4] == b"\x7fELF"
    finally:
        nvrtc.destroyProgram(prog)


def test_sources_ship_inside_the_package():
    for source_name, _ in cuda.KERNELS:
        assert "__global__" in cuda.kernel_source(source_name)
    assert "namespace cumel" in cuda.kernel_dir().joinpath("common.cuh").read_text()
