"""The packages point one way: golden -> wire -> rtl -> fpga -> verif -> nibble.

Every import of every module (at the top, inside functions, relative or absolute) is
read with ``ast`` and checked against the layer it comes from. ``edatools`` (where the
EDA tools are) stands aside: any layer may import it, and it imports none of them.
The formats below rtl (``golden``, ``wire``) and ``edatools`` import no HDL library.
"""

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Bottom to top.
LAYERS = ("golden", "wire", "rtl", "fpga", "verif", "nibble")
#: Importable from every layer; imports no layer.
ASIDE = ("edatools",)
#: HDL libraries: not below rtl, not in edatools.
HDL = ("amaranth", "amaranth_boards")
NO_HDL = ("golden", "wire", "edatools")


def allowed(package: str, target: str) -> bool:
    """May a module of ``package`` import the top-level module ``target``?"""
    if target in HDL:
        return package not in NO_HDL
    if target in ASIDE:
        return True
    if target not in LAYERS:
        return True                       # the standard library and third-party packages
    if package in ASIDE:
        return False
    return LAYERS.index(target) <= LAYERS.index(package)


def imports(source: str, module: str) -> list:
    """(line, imported module) of every import in ``source``, the code of ``module``
    (dotted name; a package's ``__init__`` is the package's name plus ``.__init__``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[:-node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            found.append((node.lineno, name))
    return found


def violations(source: str, module: str) -> list:
    package = module.split(".")[0]
    return [f"{module}:{line} imports {name}" for line, name in imports(source, module)
            if not allowed(package, name.split(".")[0])]


def project_modules():
    for package in LAYERS + ASIDE:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            yield ".".join(rel.parts), path


def test_every_package_is_checked():
    found = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert found - {"tests"} - set(LAYERS + ASIDE) == set(), "a package needs its place in LAYERS"
    assert set(LAYERS) <= found


def test_no_import_points_up_a_layer():
    bad = [v for module, path in project_modules() for v in violations(path.read_text(), module)]
    assert not bad, "imports that point up a layer:\n" + "\n".join(bad)


@pytest.mark.parametrize("module, code, bad", [
    ("golden.gemm", "from rtl.layouts import command_layout", True),
    ("golden.gemm", "def f():\n    import nibble.cli", True),          # inside a function
    ("wire.streams", "from amaranth.lib import data", True),
    ("wire.host_link", "from ..rtl import layouts", True),              # relative, resolved
    ("wire.host_link", "from . import streams", False),
    ("rtl.generate", "from fpga.boards import BOARDS", True),
    ("rtl.generate", "from edatools import verilator_bin", False),
    ("fpga.synth", "from verif.runner import run", True),
    ("fpga.synth", "from rtl.pipeline import REPLICA_SUFFIX", False),
    ("verif.tb_bridge", "from nibble.device import Device", True),
    ("verif.tb_bridge", "from wire.host_driver import HostDriver", False),
    ("nibble.device", "from verif.sim_link import SimLink", False),
    ("edatools.wasm_stack", "import golden", True),
])
def test_the_rule_catches_what_it_should(module, code, bad):
    assert bool(violations(code, module)) == bad


def _without_amaranth(tmp_path, code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter whose ``amaranth`` fails to import."""
    fake = tmp_path / "no_hdl"
    (fake / "amaranth").mkdir(parents=True)
    (fake / "amaranth" / "__init__.py").write_text(
        "raise ImportError('amaranth is made unimportable by this test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT)])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=600)


def test_training_on_golden_needs_no_amaranth(tmp_path):
    """The golden backend, the driver and the wire formats import without any HDL; the
    rtl backend is where Amaranth comes in."""
    proc = _without_amaranth(tmp_path, """
        import sys
        import nibble.training, nibble.backends, nibble.e2e, nibble.study, nibble.device
        import wire.gemm_protocol, wire.host_link, wire.host_driver
        from golden.params import NibbleParams
        from nibble.backends import make_backend
        backend = make_backend("golden", NibbleParams(tile=4))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("rtl", "fpga", "amaranth"))
        print("loaded:", loaded)
        try:
            make_backend("rtl", NibbleParams(tile=4))
        except ImportError as exc:
            print("rtl backend:", exc)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "rtl backend: amaranth is made unimportable" in proc.stdout
    assert "loaded: []" in proc.stdout


def test_golden_training_command_runs_without_amaranth(tmp_path):
    proc = _without_amaranth(tmp_path, """
        from nibble.cli import main
        raise SystemExit(main(["train", "--epochs", "1", "--seeds", "1", "--hidden", "8",
                               "--configs", "nibble", "--quiet", "--size", "4"]))
    """)
    assert proc.returncode == 0, proc.stderr
    assert "| nibble |" in proc.stdout
