"""A wheel of sarcoscope carries the shipped model, and an installed copy finds it.

The model is tracked in models/ at the repository root; a hospital PC installs a wheel, not a
checkout, so the wheel must bring the file and ``default_model_path`` must look where the
wheel puts it. Built and installed offline (no build isolation, no dependencies).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from tests.conftest import REPO_ROOT

MODEL = REPO_ROOT / "models" / "sarcoscope-l3.onnx"


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert result.returncode == 0, f"{cmd}: {result.stdout}\n{result.stderr}"
    return result


def test_installed_wheel_finds_the_shipped_model(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
          str(REPO_ROOT)])
    (wheel,) = wheels.glob("sarcoscope-*.whl")
    with zipfile.ZipFile(wheel) as z:
        inside = [n for n in z.namelist() if n.endswith("/share/sarcoscope/models/sarcoscope-l3.onnx")]
        assert len(inside) == 1, z.namelist()
        assert hashlib.sha256(z.read(inside[0])).hexdigest() == hashlib.sha256(MODEL.read_bytes()).hexdigest()

    env_dir = tmp_path / "env"
    _run([sys.executable, "-m", "venv", str(env_dir)])  # its own pip (bundled, offline)
    py = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    # the new environment's pip: this one's would also uninstall the developer's editable copy
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])
    # the new environment borrows the dependencies (numpy, onnxruntime …) of this one
    deps = sysconfig.get_paths()["purelib"]
    probe = (
        "import sarcoscope.segment.onnx_model as m, sys; p = m.default_model_path(); "
        "print(p); print(p.is_file()); print(m.__file__)"
    )
    out = _run([str(py), "-c", probe], env={**os.environ, "PYTHONPATH": deps}, cwd=tmp_path).stdout.split("\n")
    found, exists, module = Path(out[0]), out[1], Path(out[2])
    assert exists == "True", out
    assert env_dir.resolve() in module.resolve().parents, f"imported the checkout, not the wheel: {module}"
    assert found.resolve() == (env_dir / "share" / "sarcoscope" / "models" / "sarcoscope-l3.onnx").resolve()
