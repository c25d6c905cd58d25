"""``python -m bench kernels``: what ptxas says about every kernel, and the occupancy it allows.

No GPU needed. Every instantiation of ``cumel.cuda.KERNELS`` is compiled by NVRTC (the
``nvidia-cuda-nvrtc`` wheel of the test extra, through ``cupy_backends``) to a cubin for sm_80
(A100) and sm_90 (H100, H200) with ``-Xptxas=-v``, with the options CuPy uses at run time
(``cumel.cuda.compile_options()`` and CuPy's ``-ftz=true``). ptxas reports per kernel its
registers, spill stores and loads, stack frame and static shared memory. With the block size and
dynamic shared memory the launchers use for each standard workload
(``cumel.cuda.launch.block_geometry``), the theoretical occupancy follows from the published
per-SM limits of the architecture (:data:`ARCHS`), computed as CUDA's ``cuda_occupancy.h`` does:

* registers: ``ceil(32 r / 256) * 256`` per warp, the register file split into 4 sub-partitions
  of 16384, so ``4 * floor(16384 / that)`` warps an SM, in whole blocks;
* shared memory: ``ceil((static + dynamic + 1 KB reserved) / 128) * 128`` per block against the
  SM's shared memory;
* threads (64 warps an SM) and blocks (32 an SM).

The resident warps are what a latency-bound kernel can overlap. The table goes to stdout and
``kernels.md``, everything to ``kernels.json``.
"""
from __future__ import annotations

import argparse
import functools
import glob
import importlib.util
import json
import os
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from cumel.workloads import WORKLOADS

from .environment import portable_path

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "kernels"
CUPY_RUNTIME_OPTIONS = ("-ftz=true",)      # cupy/cuda/compiler.py adds it to every compile


@dataclass(frozen=True)
class ArchLimits:
    """Per-SM limits of an architecture (CUDA C++ Programming Guide, "Features and Technical
    Specifications"; ``cuda_occupancy.h`` for the allocation granularities)."""
    name: str
    shared_per_sm: int              # bytes, the largest carve-out
    shared_optin_per_block: int     # MaxSharedMemoryPerBlockOptin
    max_warps: int = 64
    max_blocks: int = 32
    registers: int = 65536
    register_unit: int = 256        # registers are allocated per warp in units of 256
    sub_partitions: int = 4
    max_registers_per_thread: int = 255
    shared_reserved_per_block: int = 1024
    shared_unit: int = 128


ARCHS = {
    "sm_80": ArchLimits("sm_80", shared_per_sm=164 * 1024, shared_optin_per_block=163 * 1024),
    "sm_90": ArchLimits("sm_90", shared_per_sm=228 * 1024, shared_optin_per_block=227 * 1024),
}


class Unavailable(Exception):
    """NVRTC or the CUDA headers are missing here (the reason is the message)."""


def _round_up(x, unit):
    return -(-x // unit) * unit


def occupancy(arch, registers, threads, static_shared, dynamic_shared):
    """Resident blocks and warps per SM of a kernel, and what limits them.

    Returns
    -------
    dict
        ``blocks``, ``warps``, ``occupancy`` (warps / max warps), ``limited_by`` (the limits
        that give the minimum: "registers", "shared memory", "threads", "blocks"), and the
        blocks each limit alone allows (``by_registers`` ...).
    """
    warps_per_block = -(-threads // 32)
    per_warp = _round_up(registers * 32, arch.register_unit)
    assumed = per_warp * _round_up(warps_per_block, arch.sub_partitions)
    if registers > arch.max_registers_per_thread or assumed > arch.registers:
        by_registers = 0
    elif per_warp == 0:
        by_registers = arch.max_blocks
    else:
        warps = (arch.registers // arch.sub_partitions // per_warp) * arch.sub_partitions
        by_registers = warps // warps_per_block
    used = static_shared + dynamic_shared
    if used > arch.shared_optin_per_block:
        by_shared = 0
    else:
        by_shared = arch.shared_per_sm // _round_up(used + arch.shared_reserved_per_block,
                                                     arch.shared_unit)
    limits = {"registers": by_registers, "shared memory": by_shared,
              "threads": arch.max_warps // warps_per_block, "blocks": arch.max_blocks}
    blocks = min(limits.values())
    return {"blocks": blocks, "warps": blocks * warps_per_block,
            "occupancy": blocks * warps_per_block / arch.max_warps,
            "limited_by": [name for name, value in limits.items() if value == blocks],
            **{f"by_{name.replace(' ', '_')}": value for name, value in limits.items()}}


# -- NVRTC ----------------------------------------------------------------------------------------

def nvrtc_module():
    """``cupy_backends.cuda.libs.nvrtc`` with a loadable library, else :class:`Unavailable`."""
    try:
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
    except Exception as exc:  # noqa: BLE001 - any failure to load means "not here", with why
        raise Unavailable(f"NVRTC is not usable here ({type(exc).__name__}: {exc}); "
                          "pip install 'nvidia-cuda-nvrtc==13.*' (the test extra)") from None
    return nvrtc


def cuda_include_dir():
    """Folder with ``cooperative_groups.h``: the CUDA headers CuPy itself would use (the
    ``nvidia-cuda-runtime`` wheel), found without importing ``cupy``."""
    def has(folder):
        return bool(folder) and os.path.isfile(os.path.join(folder, "cooperative_groups.h"))
    try:
        from cuda.pathfinder import find_nvidia_header_directory
        folder = find_nvidia_header_directory("cudart")
        if has(folder):
            return folder
    except Exception:  # noqa: BLE001, S110 - optional helper; the wheel layout is searched next
        pass
    candidates = []
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations or []) if spec else []:
        candidates += sorted(glob.glob(os.path.join(base, "cu[0-9]*", "include")), reverse=True)
        candidates.append(os.path.join(base, "cuda_runtime", "include"))
    for env in ("CUDA_PATH", "CUDA_HOME"):
        if os.environ.get(env):
            candidates.append(os.path.join(os.environ[env], "include"))
    candidates.append("/usr/local/cuda/include")
    for folder in candidates:
        if has(folder):
            return folder
    raise Unavailable("CUDA headers (cooperative_groups.h) not found: "
                      "pip install 'nvidia-cuda-runtime==13.*' (the test extra)")


def cupy_include_options():
    """The include folders CuPy adds to every compile (its bundled CCCL: ``<nv/target>``, which
    ``cooperative_groups.h`` needs), found beside ``cupy_backends`` without importing ``cupy``
    (which may be a stand-in, as under the CUDA emulator)."""
    spec = importlib.util.find_spec("cupy_backends")
    for base in (spec.submodule_search_locations or []) if spec else []:
        include = os.path.join(os.path.dirname(base), "cupy", "_core", "include")
        cccl = os.path.join(include, "cupy", "_cccl")
        if os.path.isdir(os.path.join(cccl, "libcudacxx")):
            return (f"-I{cccl}/cub", f"-I{cccl}/thrust", f"-I{cccl}/libcudacxx", f"-I{include}")
    raise Unavailable("CuPy's bundled CCCL headers (cupy/_core/include) not found: "
                      "pip install cupy-cuda13x (the test extra)")


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas(log):
    """``{mangled name: {registers, spill_stores, spill_loads, stack, static_shared}}`` from an
    NVRTC log compiled with ``-Xptxas=-v``."""
    found, current = {}, None
    for line in log.splitlines():
        entry = _ENTRY.search(line)
        if entry:
            current = found.setdefault(entry.group(1), {"registers": None, "spill_stores": None,
                                                         "spill_loads": None, "stack": None,
                                                         "static_shared": 0})
            continue
        if current is None:
            continue
        frame = _FRAME.search(line)
        if frame:
            current["stack"], current["spill_stores"], current["spill_loads"] = map(
                int, frame.groups())
        used = _USED.search(line)
        if used:
            current["registers"] = int(used.group(1))
            smem = _SMEM.search(line)
            current["static_shared"] = int(smem.group(1)) if smem else 0
    return found


@functools.cache
def ptxas_info(source, cooperative, arch):
    """ptxas's figures for every instantiation of ``KERNELS[(source, cooperative)]`` on
    ``arch``: ``{name expression: {...}}`` (see :func:`parse_ptxas`). Cached per process."""
    from cumel import cuda
    nvrtc = nvrtc_module()
    if int(arch.split("_")[1]) not in nvrtc.getSupportedArchs():
        raise Unavailable(f"NVRTC {nvrtc.getVersion()} cannot target {arch}")
    names = cuda.KERNELS[(source, cooperative)]
    options = (cupy_include_options() + cuda.compile_options() + CUPY_RUNTIME_OPTIONS
               + (f"-I{cuda_include_dir()}", f"--gpu-architecture={arch}", "-Xptxas=-v"))
    prog = nvrtc.createProgram(cuda.module_code(source), source, (), ())
    try:
        for name in names:
            nvrtc.addNameExpression(prog, name)
        try:
            nvrtc.compileProgram(prog, options)
        except nvrtc.NVRTCError as exc:
            raise RuntimeError(f"{source} for {arch}: {exc}\n{nvrtc.getProgramLog(prog)}") from None
        by_mangled = parse_ptxas(nvrtc.getProgramLog(prog).replace("\x00", ""))
        result = {}
        for name in names:
            info = by_mangled.get(nvrtc.getLoweredName(prog, name))
            if info is None or info["registers"] is None:
                raise RuntimeError(f"ptxas reported nothing for {name} on {arch}")
            result[name] = info
        return result
    finally:
        nvrtc.destroyProgram(prog)


def item_size(name_expression):
    return 8 if "<double>" in name_expression else 4


def kernel_rows(archs=tuple(ARCHS), workloads=tuple(WORKLOADS)):
    """One row per (module, instantiation, architecture): ptxas's figures and, per workload, the
    launch geometry and occupancy. A module NVRTC cannot compile here gives rows with
    ``error`` (Unavailable is raised when NVRTC itself is missing)."""
    from cumel import cuda
    rows = []
    for (source, cooperative), names in cuda.KERNELS.items():
        for arch_name in archs:
            arch = ARCHS[arch_name]
            try:
                info = ptxas_info(source, cooperative, arch_name)
                error = None
            except Unavailable as exc:
                if "cannot target" not in str(exc):
                    raise
                info, error = {}, str(exc)
            for name in names:
                row = {"source": source, "cooperative": cooperative, "kernel": name,
                       "arch": arch_name, "error": error, **info.get(name, {}), "workloads": {}}
                if error is None:
                    kernel = name.split("<")[0]
                    for w in workloads:
                        workload = WORKLOADS[w]
                        try:
                            threads, dynamic = cuda.launch.block_geometry(
                                kernel, workload.n_mels, workload.n_stft, item_size(name),
                                arch.shared_optin_per_block)
                        except (cuda.DeviceLimitError, ValueError) as exc:
                            # past the device's shared memory, or a kernel whose launch
                            # geometry cumel.cuda.launch.block_geometry does not know yet
                            row["workloads"][w] = {"error": str(exc)}
                            continue
                        row["workloads"][w] = {
                            "threads": threads, "dynamic_shared": dynamic,
                            **occupancy(arch, row["registers"], threads, row["static_shared"],
                                        dynamic)}
                rows.append(row)
    return rows


def report(archs=tuple(ARCHS), workloads=tuple(WORKLOADS)):
    """``{"archs": limits, "rows": kernel_rows(...), "nvrtc": version}``."""
    nvrtc = nvrtc_module()
    return {"nvrtc": ".".join(map(str, nvrtc.getVersion())),
            "options": list(CUPY_RUNTIME_OPTIONS) + ["-Xptxas=-v"],
            "archs": {name: asdict(ARCHS[name]) for name in archs},
            "workloads": list(workloads), "rows": kernel_rows(archs, workloads)}


def _kb(n):
    return f"{n / 1024:.1f} KB"


_FIGURES = ("registers", "spill_stores", "spill_loads", "stack", "static_shared")


def markdown(result, only_float=False):
    """The table: one row per kernel module, instantiation and architecture, sorted by kernel
    and architecture. ``only_float``: the float32 instantiations only, and a cooperative module's
    row folded into the plain one where ptxas reports the same figures."""
    workloads = result["workloads"]
    rows = sorted(result["rows"], key=lambda r: (r["source"], r["kernel"], r["arch"],
                                                 r["cooperative"]))
    folded = set()
    if only_float:
        rows = [r for r in rows if "<double>" not in r["kernel"]]
        plain = {(r["kernel"], r["arch"]): r for r in rows if not r["cooperative"]}
        for r in rows:
            twin = plain.get((r["kernel"], r["arch"]))
            if r["cooperative"] and twin and all(r.get(k) == twin.get(k) for k in _FIGURES):
                folded.add(id(r))
                twin["_also_cooperative"] = True
    lines = ["| kernel | arch | registers | spills st/ld (B) | stack (B) | static smem (B) | "
             "threads | " + " | ".join(workloads) + " |",
             "| --- | --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in workloads)
             + " |"]
    for row in rows:
        if id(row) in folded:
            continue
        name = f"`{row['kernel']}`" + (" (cooperative)" if row["cooperative"] else "")
        if row.pop("_also_cooperative", False):
            name += " (plain and cooperative)"
        if row["error"]:
            lines.append(f"| {name} | {row['arch']} | {row['error']} |")
            continue
        cells, threads = [], set()
        for w in workloads:
            occ = row["workloads"][w]
            if "error" in occ:
                cells.append("does not fit" if "shared memory" in occ["error"] else "?")
                continue
            threads.add(occ["threads"])
            cells.append(f"{occ['warps']}/64 ({', '.join(occ['limited_by'])}), "
                         f"{_kb(occ['dynamic_shared'])}")
        lines.append(f"| {name} | {row['arch']} | {row['registers']} | {row['spill_stores']}/"
                     f"{row['spill_loads']} | {row['stack']} | {row['static_shared']} | "
                     f"{'/'.join(map(str, sorted(threads)))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def legend(result):
    return (f"NVRTC {result['nvrtc']}, a cubin per architecture, ptxas -v. Per workload: "
            "resident warps per SM of 64 (what limits them) and the launch's dynamic shared "
            "memory per block. Limits: " + "; ".join(
                f"{a['name']} {a['registers']} registers, {_kb(a['shared_per_sm'])} shared "
                f"memory ({_kb(a['shared_optin_per_block'])} a block), {a['max_warps']} warps, "
                f"{a['max_blocks']} blocks an SM" for a in result["archs"].values()) + ".")


def write(result, out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernels.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "kernels.md").write_text("# CUDA kernels: ptxas and occupancy\n\n"
                                    + "`python -m bench kernels`\n\n" + legend(result) + "\n\n"
                                    + markdown(result) + "\n")
    return out / "kernels.json", out / "kernels.md"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench kernels",
                                description="Registers, spills, stack and shared memory of every "
                                            "CUDA kernel (NVRTC + ptxas, no GPU needed), and the "
                                            "theoretical occupancy per workload on sm_80 / sm_90.")
    p.add_argument("--out", default=str(DEFAULT_OUT), metavar="DIR",
                   help="folder for kernels.json and kernels.md (default bench/results/kernels)")
    p.add_argument("--arch", default=",".join(ARCHS),
                   help=f"comma list of {', '.join(ARCHS)} (default both)")
    args = p.parse_args(argv)
    archs = tuple(a.strip() for a in args.arch.split(",") if a.strip())
    unknown = [a for a in archs if a not in ARCHS]
    if unknown or not archs:
        p.error(f"--arch: choose from {', '.join(ARCHS)}")
    try:
        result = report(archs)
    except Unavailable as exc:
        print(f"bench kernels: {exc}", file=sys.stderr)
        return 2
    print(legend(result) + "\n\n" + markdown(result))
    paths = write(result, args.out)
    print("wrote " + ", ".join(portable_path(p) for p in paths), file=sys.stderr)
    return 0


def has_spills_or_stack(row):
    """Whether a row's kernel spills or keeps a stack frame (either is a defect here)."""
    return bool(row["spill_stores"] or row["spill_loads"] or row["stack"])
