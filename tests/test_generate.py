"""``nibble generate``: reproducible Verilog that passes Verilator's -Wall lint with the
checked-in waivers only."""

import subprocess
import sys

import pytest

from golden.params import NibbleParams
from rtl.generate import UNITS, WAIVER_FILE, generate, lint


@pytest.fixture(scope="module", params=[4, 8, 16])
def generated(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"gen{request.param}")
    proc = subprocess.run([sys.executable, "-m", "nibble", "generate", "--size",
                           str(request.param), "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return request.param, out


def test_generate_writes_top_and_units(generated):
    tile, out = generated
    for unit in UNITS:
        text = (out / f"{unit}.v").read_text()
        assert f"module {unit}(" in text or f"module {unit} (" in text
    top = (out / "nibble_top.v").read_text()
    assert "/work/" not in top and ".py:" not in top           # emit_src=False
    # the T x T array really is T x T
    assert f"pe_{tile - 1}_{tile - 1}" in top and f"pe_{tile}_0" not in top


@pytest.mark.parametrize("unit", UNITS)
def test_lint_clean(generated, unit):
    _, out = generated
    proc = lint(out / f"{unit}.v", unit)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_waivers_name_their_rules_and_reasons():
    text = WAIVER_FILE.read_text()
    rules = [line.split("-rule")[1].strip() for line in text.splitlines()
             if line.startswith("lint_off")]
    assert rules and all(rules)
    assert "-Wno-fatal" not in text
    # every waived rule is preceded by a comment line giving the reason
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("lint_off"):
            j = i - 1
            while lines[j].startswith("lint_off"):
                j -= 1
            assert lines[j].startswith("//"), line


def test_generate_lint_flag(tmp_path):
    """--lint, on the narrow output path of the iCEBreaker build (one lane)."""
    proc = subprocess.run([sys.executable, "-m", "nibble", "generate", "--size", "2",
                           "--acc-bits", "24", "--lanes", "1", "--out", str(tmp_path), "--lint"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert proc.stdout.count(" clean ") == len(UNITS)


def test_generate_is_reproducible(tmp_path):
    params = NibbleParams(tile=2, acc_bits=24)
    first = generate(params, tmp_path / "a", units=("nibble_top",))
    second = generate(params, tmp_path / "b", units=("nibble_top",))
    assert first[0].read_bytes() == second[0].read_bytes()


def test_lint_catches_a_real_problem(tmp_path):
    """The lint gate can fail: a width bug the waivers do not cover is reported."""
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input wire [3:0] a, output wire b);\n"
                   "  assign b = a < 4'h0;\nendmodule\n")
    proc = lint(bad, "bad")
    assert proc.returncode != 0 and "UNSIGNED" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--size", "3"], "power of two"),
    (["--size", "1"], "power of two"),
    (["--size", "16", "--acc-bits", "16"], "acc_bits"),
])
def test_bad_parameters_exit_2(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "nibble", "generate", "--out",
                           str(tmp_path), *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr


def test_generate_bus_axi(tmp_path):
    """--bus axi: nibble_axi.v with AXI-named ports, lint-clean under the same waivers,
    and the register map as C header and Markdown, the ones wire.axi generates."""
    from wire.axi import c_header, markdown_table
    proc = subprocess.run([sys.executable, "-m", "nibble", "generate", "--size", "4", "--bus",
                           "axi", "--out", str(tmp_path), "--lint"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count(" clean ") == 1 and "top module nibble_axi" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nibble_axi.v", "nibble_axi_regs.h",
                                                          "nibble_axi_regs.md"]
    assert (tmp_path / "nibble_axi_regs.h").read_text() == c_header()
    assert markdown_table() in (tmp_path / "nibble_axi_regs.md").read_text()
    header = (tmp_path / "nibble_axi.v").read_text().split("module nibble_axi(")[1].split(");")[0]
    ports = {p.strip() for p in header.replace("\n", "").split(",")}
    for name in ("aclk", "aresetn", "s_axis_cmd_tdata", "s_axis_mask_tlast", "s_axis_a_exps_tready",
                 "m_axis_result_tdata", "m_axis_result_tlast", "m_axis_result_tready",
                 "s_axil_awaddr", "s_axil_wstrb", "s_axil_bresp", "s_axil_rdata", "s_axil_rready"):
        assert name in ports, name
    assert "clk" not in ports and "rst" not in ports
