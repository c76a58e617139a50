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


@pytest.mark.parametrize("args, message", [
    (["train", "--tile", "3"], "power of two"),
    (["train", "--tile", "128"], "power of two"),
    (["train", "--acc-bits", "8"], "acc_bits"),
    (["train", "--tile", "4", "--lanes", "3"], "lanes must be a power of two in 1..4"),
    (["generate", "--tile", "4", "--lanes", "8", "--out", "x"], "lanes must be a power of two"),
    (["train", "--epochs", "0"], "positive integer"),
    (["train", "--lr", "nan"], "lr"),
    (["train", "--configs", "bogus"], "unknown config"),
    (["train", "--backend", "fpga"], "invalid choice"),
    (["frobnicate"], "invalid choice"),
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
