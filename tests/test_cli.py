"""The ``nibble`` command as a user runs it."""

import json
import subprocess
import sys

import pytest


def run_nibble(*args, **kw):
    return subprocess.run([sys.executable, "-m", "nibble", *args], capture_output=True,
                          text=True, timeout=600, **kw)


def test_train_prints_table_and_writes_json(tmp_path):
    out = tmp_path / "study.json"
    proc = run_nibble("train", "--epochs", "2", "--seeds", "2", "--hidden", "16",
                      "--configs", "fp32", "nibble", "--json", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "| fp32 |" in proc.stdout and "| nibble |" in proc.stdout
    doc = json.loads(out.read_text())
    assert set(doc["results"]) == {"fp32", "nibble"}
    for name, r in doc["results"].items():
        assert 10.0 < r["test_acc_mean"] <= 100.0
        assert r["test_acc_std"] >= 0.0
        assert len(r["test_accs"]) == 2
        assert r["test_acc_mean"] == pytest.approx(sum(r["test_accs"]) / 2)
    assert doc["config"]["tile"] == 8 and doc["backend"] == "golden"
    assert doc["config"]["lanes"] == 8
    assert doc["measured"]["date"] == doc["generated"][:10] and "commit" in doc["measured"]


@pytest.mark.parametrize("args, message", [
    (["train", "--tile", "3"], "power of two"),
    (["train", "--tile", "128"], "power of two"),
    (["train", "--acc-bits", "8"], "acc_bits"),
    (["train", "--tile", "4", "--lanes", "3"], "lanes must be a power of two in 1..4"),
    (["generate", "--tile", "4", "--lanes", "8", "--out", "x"], "lanes must be a power of two"),
    (["generate", "--tile", "8", "--lanes", "4", "--out-lanes", "8", "--out", "x"],
     "out_lanes must be a power of two in 1..4 (the lanes)"),
    (["train", "--tile", "4", "--out-lanes", "3"], "out_lanes must be a power of two"),
    (["train", "--epochs", "0"], "positive integer"),
    (["train", "--lr", "nan"], "lr"),
    (["train", "--configs", "bogus"], "unknown config"),
    (["train", "--backend", "fpga"], "invalid choice"),
    (["frobnicate"], "invalid choice"),
    (["bench", "boards"], "needs --reports"),
    (["bench", "boards", "--reports", "/no/such/build"], "no synth report at /no/such/build"),
])
def test_bad_input_gives_one_line_error_and_exit_2(args, message):
    proc = run_nibble(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_bench_summary_rejects_a_file_without_an_area_study(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "area.json"
    bad.write_text('{"something": 1}')
    for path, message in ((bad, "no area study"), (tmp_path / "missing.json", "No such file")):
        proc = subprocess.run([sys.executable, "-m", "nibble", "bench", "summary",
                               "--area-json", str(path)], capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_bench_boards_tabulates_synth_reports(tmp_path):
    """One row per report.json (given as a file or as its build directory), with the
    figures a reader compares: cells, Fmax, timing, peak and the critical path."""
    def report(board, size, fmax, met, peak):
        return {"board": board, "device": "LFE5U-85F", "size": size, "acc_bits": 32,
                "lanes": size, "luts": 1000 * size, "luts_available": 83640, "ffs": 700 * size,
                "brams": 3, "fmax_mhz": fmax, "target_mhz": 100, "timing_met": met,
                "peak_gmacs": peak,
                "stage_seconds": {"synthesis": 60.0, "place_route": 600.0},
                "critical_path": {"ns": 1000 / fmax, "logic_levels": 5, "routing_ns": 9.0,
                                  "start": "a_q", "end": "b_d", "sources": []}}
    (tmp_path / "t8").mkdir()
    (tmp_path / "t8" / "report.json").write_text(
        json.dumps({**report("ulx3s", 8, 66.8, False, 4.27), "stochastic": False}))
    (tmp_path / "t16.json").write_text(
        json.dumps({**report("ulx3s", 16, 90.0, False, 23.04), "out_lanes": 4}))
    (tmp_path / "t4.json").write_text(json.dumps(report("orangecrab", 4, 125.0, True, 1.6)))
    proc = run_nibble("bench", "boards", "--reports", str(tmp_path / "t8"),
                      str(tmp_path / "t4.json"), str(tmp_path / "t16.json"))
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ulx3s")
            or line.startswith("| orangecrab")]
    assert len(rows) == 3
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[:12] == ["ulx3s (LFE5U-85F)", "8", "32", "8", "left out", "8000 (83640)",
                          "5600", "3", "66.8", "100", "missed", "4.27"]
    assert cells[12] == "10.0 min" and cells[13].startswith("15.0 ns, 5 logic levels")
    # (a report from before NibbleParams.stochastic has no such field)
    assert "| 4 | — (before it existed) |" in rows[1]
    assert "| 125.0 | 100 | met | 1.60 |" in rows[1]
    # output stages narrower than the lanes (reports from before out_lanes: as wide)
    assert "| 16 | 32 | 16, output 4 |" in rows[2] and "| 8 | 32 | 8 |" in rows[0]


def test_synth_report_records_the_commit_it_was_built_from(tmp_path, monkeypatch):
    """``nibble synth`` stamps report.json with the date and the checkout's commit as the
    build started (taken before the tools run: the tree may change during a long
    build). The tools are stood in for; the flow itself is tested in test_synth."""
    import fpga.synth as S
    from nibble.cli import main

    commit = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()

    def synth(params, board, out, **kw):
        report = {"board": board, "size": params.tile, "fmax_mhz": 101.0}
        (tmp_path / "report.json").write_text(json.dumps(report))
        return report

    monkeypatch.setattr(S, "synth", synth)
    monkeypatch.setattr(S, "format_report", lambda report: "report")
    assert main(["synth", "--board", "ulx3s", "--size", "4", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["fmax_mhz"] == 101.0
    assert doc["measured"]["commit"].split("-")[0] == commit
    assert len(doc["measured"]["date"]) == 10
