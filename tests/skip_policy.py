"""Which skips a test run may have, so that a skipped test is never mistaken for a passed one.

``$CUMEL_ALLOWED_SKIPS`` (set by ``.ci/run``) names the kinds of skip the run allows, comma
separated, from :data:`KINDS`; every other skip fails the run, and the summary lists each with
its reason. Set but empty: no skip at all is allowed. Unset: no policy (a developer's run).

A skip's kind is read from its reason, so a new skip whose reason fits no kind (missing data,
NVRTC not loading, no C++ compiler for the emulator, a peer missing where it must be installed)
fails CI until it is either fixed or given a kind here on purpose.
"""
from __future__ import annotations

import os
import re

import pytest

ENVIRONMENT_VARIABLE = "CUMEL_ALLOWED_SKIPS"

# kind -> (what it is, the reasons that belong to it)
KINDS = {
    "gpu": ("tests of the GPU hardware path: they need a CUDA device (or run only without one)",
            re.compile(r"needs CuPy and a CUDA device|needs two CUDA devices|needs a CUDA build of "
                       r"torch|^a GPU is (present|usable here)")),
    "sm70-cuda13": ("CUDA 13's NVRTC cannot target sm_70 (Volta); the CUDA 12 step compiles it",
                    re.compile(r"^NVRTC \(13, \d+\) cannot target sm_70\b")),
    "peers": ("the optional peers (torch, torchaudio, librosa, transformers), run by the peers step",
              re.compile(r"^(torch|torchaudio|librosa|transformers) not installed \("
                         r"|^could not import '(torch|torchaudio|librosa|transformers)'")),
    "torchaudio-build": ("torchaudio has no build for the peers step's torch",
                         re.compile(r"^torchaudio not installed \(no build for CI's torch")),
}


def kinds_of(reason):
    """The kinds (keys of :data:`KINDS`) a skip reason belongs to: a set, empty for none (a
    reason may be of two kinds: torchaudio is a peer, and it has no build for CI's torch)."""
    return {kind for kind, (_, pattern) in KINDS.items() if pattern.search(reason)}


def parse_allowed(text):
    """``"gpu, peers"`` -> ``("gpu", "peers")``; an unknown name raises a UsageError naming it."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in KINDS]
    if unknown:
        raise pytest.UsageError(f"{ENVIRONMENT_VARIABLE}={text!r}: unknown kind(s) {unknown}; "
                                f"the kinds are {sorted(KINDS)}")
    return names


def skip_reason(report):
    """The reason of a skipped test or collection report (pytest's ``-rs`` text)."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
    else:
        reason = str(longrepr)
    return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


class SkipPolicy:
    """The pytest plugin: records every skip, fails the session on one the run does not allow."""

    def __init__(self, allowed):
        self.allowed = tuple(allowed)
        self.refused = []             # (node id, reason)

    def _check(self, report):
        if report.skipped and not getattr(report, "wasxfail", None):
            reason = skip_reason(report)
            if not kinds_of(reason) & set(self.allowed):
                self.refused.append((report.nodeid, reason))

    def pytest_runtest_logreport(self, report):
        self._check(report)

    def pytest_collectreport(self, report):
        self._check(report)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session):
        if self.refused and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        if not self.refused:
            return
        allowed = ", ".join(self.allowed) or "none"
        terminalreporter.section(f"skips this run does not allow ({ENVIRONMENT_VARIABLE}: {allowed})",
                                 sep="=", red=True, bold=True)
        for nodeid, reason in self.refused:
            terminalreporter.line(f"NOT ALLOWED {nodeid}: {reason}")
        terminalreporter.line(f"{len(self.refused)} skip(s) not allowed: the run fails (kinds: "
                              + "; ".join(f"{k}: {what}" for k, (what, _) in KINDS.items()) + ")")


def register(config):
    """Install the policy when ``$CUMEL_ALLOWED_SKIPS`` is set (tests/conftest.py calls this)."""
    text = os.environ.get(ENVIRONMENT_VARIABLE)
    if text is not None:
        config.pluginmanager.register(SkipPolicy(parse_allowed(text)), "cumel-skip-policy")
