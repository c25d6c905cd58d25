"""The skip policy of tests/skip_policy.py (what .ci/run allows): every skip reason the suite can
give has the kind it should, and a run with a skip of another kind fails, saying which and why."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import skip_policy

TESTS = Path(__file__).resolve().parent

# reasons as the suite words them -> kind (None: not allowed in any CI run)
REASONS = {
    "needs CuPy and a CUDA device": "gpu",
    "needs two CUDA devices": "gpu",
    "needs a CUDA build of torch": "gpu",
    "a GPU is present (tests/test_gpu_bulk.py covers --device cuda)": "gpu",
    "a GPU is usable here": "gpu",
    "NVRTC (13, 0) cannot target sm_70 (supported: (75, 80, 86, 87, 88, 89, 90))": "sm70-cuda13",
    "NVRTC (13, 1) cannot target sm_70": "sm70-cuda13",
    "torch not installed (CI: pip install torch==2.13.0)": "peers",
    "librosa not installed (the real front end; CI installs it in the torch and front-end step: "
    "pip install -e '.[test-peers]')": "peers",
    "could not import 'librosa': No module named 'librosa'": "peers",
    "could not import 'torch': No module named 'torch'": "peers",
    "torchaudio not installed (no build for CI's torch; checked where it imports)": ("peers",
                                                                                  "torchaudio-build"),
    # none of these may pass CI quietly
    "NVRTC (12, 9) cannot target sm_70": None,
    "NVRTC (13, 0) cannot target sm_90": None,
    "NVRTC library not loadable: libnvrtc.so.13: cannot open shared object file": None,
    "the CUDA emulator needs a C++17 compiler: 'g++' not found (set $CXX)": None,
    "CUDA headers not found: pip install 'nvidia-cuda-runtime==13.*' (the test extra)": None,
    "needs cupy and nvidia-cuda-nvrtc (the test extra)": None,
    "needs the shared ground-truth folder: ../shared/audio/speech_00.wav is absent": None,
    "the property tests need hypothesis (test extra)": None,
    "needs dask[array] (pip install 'cumel[dask]')": None,
    "tqdm is not installed (the plain fallback prints one line per file)": None,
    "could not import 'numpy.torch': No module named 'numpy.torch'": None,
    "a torch tensor is not installed here": None,
}


@pytest.mark.parametrize("reason, kind", REASONS.items(), ids=range(len(REASONS)))
def test_each_reason_has_its_kind(reason, kind):
    assert skip_policy.kinds_of(reason) == ({kind} if isinstance(kind, str) else set(kind or ()))


def test_unknown_kind_is_a_usage_error():
    assert skip_policy.parse_allowed(" gpu, peers ,") == ("gpu", "peers")
    assert skip_policy.parse_allowed("") == ()
    with pytest.raises(pytest.UsageError, match="'gpus'"):
        skip_policy.parse_allowed("gpu,gpus")


PROBE = '''
import pytest

@pytest.mark.parametrize("reason", {reasons!r})
def test_probe(reason):
    pytest.skip(reason)

def test_passes():
    pass
'''
CONFTEST = "import skip_policy\n\ndef pytest_configure(config):\n    skip_policy.register(config)\n"


def _run(tmp_path, reasons, allowed):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_probe.py").write_text(PROBE.format(reasons=reasons))
    env = {k: v for k, v in os.environ.items() if k != skip_policy.ENVIRONMENT_VARIABLE}
    if allowed is not None:
        env[skip_policy.ENVIRONMENT_VARIABLE] = allowed
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_run_with_a_skip_it_does_not_allow_fails_naming_it(tmp_path):
    missing = "the CUDA emulator needs a C++17 compiler: 'g++' not found (set $CXX)"
    reasons = ["needs CuPy and a CUDA device", missing]
    done = _run(tmp_path, reasons, "gpu,peers")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"NOT ALLOWED test_probe.py::test_probe[{missing}]: {missing}" in done.stdout
    assert "1 skip(s) not allowed" in done.stdout
    assert "NOT ALLOWED test_probe.py::test_probe[needs CuPy" not in done.stdout
    # only allowed kinds: the run passes; no policy (unset): skips are only reported
    assert _run(tmp_path, reasons[:1], "gpu").returncode == 0
    assert _run(tmp_path, reasons, None).returncode == 0
    # set but empty: no skip at all
    assert _run(tmp_path, reasons[:1], "").returncode == 1


def test_a_module_level_skip_counts_too(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_module.py").write_text(
        "import pytest\npytest.skip('NVRTC library not loadable: libnvrtc', allow_module_level=True)\n")
    env = dict(os.environ, PYTHONPATH=str(TESTS), **{skip_policy.ENVIRONMENT_VARIABLE: "gpu"})
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1 and "NOT ALLOWED test_module.py: NVRTC library not loadable" in done.stdout
