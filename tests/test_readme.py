"""README.md is the front door: short, and its example runs as written."""
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_stays_short():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    assert len(text.encode("utf-8")) <= 20 * 1024


def test_readme_example_runs_as_written():
    blocks = re.findall(r"^## Example\n+```python\n(.*?)^```", README.read_text(encoding="utf-8"),
                        flags=re.S | re.M)
    assert len(blocks) == 1, "README.md: one ```python block right under '## Example'"
    run = subprocess.run([sys.executable, "-W", "ignore", "-c", blocks[0]], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    residual, converged = run.stdout.split()
    assert float(residual) < 1e-4 and converged == "True"
