"""Compile CUDA kernel source for the CPU emulator: g++ and the runtime in ``include/``.

What is done to the kernel text
-------------------------------
The source handed to ``RawModule`` is compiled AS IS, with one documented exception: the
``__shared__`` declarations of the main source are rewritten, one line for one line, because
shared memory must be per block while every block's fibers share one OS thread:

* ``extern __shared__ T name[];``  ->  ``T* name = ::cudasim::dynamic_shared<T>();``
  (this block's dynamic buffer, poisoned and followed by a canary);
* ``__shared__ T name[N]...;``     ->  ``auto& name = ::cudasim::static_shared<T[N]...>(ID);``
* ``__shared__ T name;``           ->  ``T& name = ::cudasim::static_shared<T>(ID);``

where ``ID`` numbers the declarations of the source. Any other use of ``__shared__`` (and any
``__shared__`` in an included header) fails to compile, so nothing is silently mistranslated.
A ``#line`` directive keeps file names and line numbers of the original source in messages.

Everything else comes from the runtime header ``include/cudasim_runtime.h`` (intrinsics, thread
indices, fibers, barriers) and ``include/cooperative_groups.h``, which come first on the include
path, then the ``-I`` folders of the options (cumel passes ``-I<kernel_dir>``). Per name
expression (``"nnls_solve<float>"``) the translation unit gets an ``extern "C"`` launcher and a
parameter-type string derived from ``&nnls_solve<float>`` by template metaprogramming.

Shared objects are cached on disk (``$CUDASIM_CACHE`` or ``~/.cache/cumel-cudasim``) by a hash
of everything that goes into them, and in memory per process.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

INCLUDE_DIR = Path(__file__).resolve().parent / "include"
CXX = os.environ.get("CXX", "g++")
CXX_FLAGS = ("-std=c++17", "-O2", "-fPIC", "-shared", "-w")

_SHARED_DECL = re.compile(
    r"(?P<extern>extern\s+)?__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s*)?"
    r"(?P<type>[A-Za-z_][\w:<>\s\*]*?)\s*(?P<name>\b[A-Za-z_]\w*)\s*(?P<dims>(?:\[[^\]]*\]\s*)*);")


class CompileError(RuntimeError):
    """g++ rejected the translated source (the message holds its diagnostics)."""


def transform_shared(source):
    """Rewrite the ``__shared__`` declarations of ``source`` (see the module docstring).

    Returns
    -------
    str
        The source with the same number of lines.
    """
    counter = iter(range(1 << 30))

    def rewrite(match):
        ctype, name, dims = match["type"].strip(), match["name"], re.sub(r"\s+", "", match["dims"])
        if match["extern"]:
            if dims != "[]":
                raise CompileError(f"unsupported extern __shared__ declaration: {match[0]!r}")
            return f"{ctype}* {name} = ::cudasim::dynamic_shared<{ctype}>();"
        ident = next(counter)
        if dims:
            return f"auto& {name} = ::cudasim::static_shared<{ctype}{dims}>({ident});"
        return f"{ctype}& {name} = ::cudasim::static_shared<{ctype}>({ident});"

    return _SHARED_DECL.sub(rewrite, source)


def translation_unit(source, name_expressions, source_name="kernel.cu"):
    """The C++ text g++ compiles: runtime, transformed source, one launcher per expression."""
    lines = ['#include "cudasim_runtime.h"', f'#line 1 "{source_name}"', transform_shared(source),
             "", "// ---- cudasim entry points ----"]
    for i, expr in enumerate(name_expressions):
        lines.append(
            f'extern "C" int cudasim_launch_{i}(void** args, const ::cudasim::LaunchConfig* cfg, '
            f"char* err, int errlen) {{\n"
            f'    return ::cudasim::launch(&{expr}, "{expr}", args, cfg, err, errlen);\n}}\n'
            f'extern "C" const char* cudasim_signature_{i}() {{\n'
            f"    static const std::string s = ::cudasim::signature_of(&{expr});\n"
            f"    return s.c_str();\n}}")
    return "\n".join(lines) + "\n"


def _split_options(options):
    """(include folders, defines, the other options) from NVRTC-style options; the others are
    NVRTC-only and ignored when compiling (architecture, -std: the emulator always compiles
    C++17), but part of the cache key."""
    includes, defines, others = [], [], []
    options = list(options)
    i = 0
    while i < len(options):
        opt = options[i]
        if opt in ("-I", "--include-path", "-D", "--define-macro") and i + 1 < len(options):
            (includes if opt in ("-I", "--include-path") else defines).append(options[i + 1])
            i += 2
            continue
        if opt.startswith("-I"):
            includes.append(opt[2:])
        elif opt.startswith("--include-path="):
            includes.append(opt.split("=", 1)[1])
        elif opt.startswith("-D"):
            defines.append(opt[2:])
        elif opt.startswith("--define-macro="):
            defines.append(opt.split("=", 1)[1])
        else:
            others.append(opt)
        i += 1
    return includes, defines, others


def _cache_dir():
    root = os.environ.get("CUDASIM_CACHE") or Path.home() / ".cache" / "cumel-cudasim"
    path = Path(root)
    try:
        path.mkdir(parents=True, exist_ok=True)
        return path
    except OSError:
        path = Path(tempfile.gettempdir()) / "cumel-cudasim"
        path.mkdir(parents=True, exist_ok=True)
        return path


def _headers_text(folders):
    """Every header text a translation unit may include, for the cache key."""
    parts = []
    for folder in folders:
        folder = Path(folder)
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                if p.suffix in (".h", ".cuh", ".hpp") and p.is_file():
                    parts.append(f"{p.name}\n{p.read_text()}")
    return "\n".join(parts)


class CompiledModule:
    """A loaded shared object: ``launchers[expr]`` (ctypes function) and ``signatures[expr]``
    (list of C++ parameter type strings such as ``"const float*"``)."""

    def __init__(self, path, name_expressions):
        self.path = path
        self.lib = ctypes.CDLL(str(path))
        self.launchers, self.signatures = {}, {}
        for i, expr in enumerate(name_expressions):
            fn = getattr(self.lib, f"cudasim_launch_{i}")
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
            sig = getattr(self.lib, f"cudasim_signature_{i}")
            sig.restype = ctypes.c_char_p
            text = sig().decode()
            self.launchers[expr] = fn
            self.signatures[expr] = text.split(",") if text else []


_loaded = {}


def compile_module(code, options=(), name_expressions=(), source_name="kernel.cu"):
    """Compile (or fetch from the caches) ``code`` with its name expressions.

    Raises
    ------
    CompileError
        With g++'s diagnostics.
    """
    includes, defines, others = _split_options(options)
    name_expressions = tuple(name_expressions)
    tu = translation_unit(code, name_expressions, source_name)
    # the key holds the headers' names and texts, not the include folders' paths: the same
    # sources elsewhere (another clone, a wheel's site-packages) find the same compiled module
    key_text = "\0".join([tu, _headers_text([INCLUDE_DIR, *includes]), repr(name_expressions),
                          repr((tuple(defines), tuple(others))), repr(CXX_FLAGS), CXX])
    key = hashlib.sha256(key_text.encode()).hexdigest()[:24]
    if key in _loaded:
        return _loaded[key]
    cache = _cache_dir()
    so_path = cache / f"{key}.so"
    if not so_path.exists():
        cpp_path = cache / f"{key}.cpp"
        cpp_path.write_text(tu)
        tmp = cache / f"{key}.{os.getpid()}.tmp.so"
        cmd = [CXX, *CXX_FLAGS, f"-I{INCLUDE_DIR}", *(f"-I{d}" for d in includes),
               *(f"-D{d}" for d in defines), "-o", str(tmp), str(cpp_path)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise CompileError(f"cudasim: g++ failed on {source_name}:\n{proc.stderr[-6000:]}")
        os.replace(tmp, so_path)   # atomic: concurrent test processes never see half a file
    module = CompiledModule(so_path, name_expressions)
    _loaded[key] = module
    return module
