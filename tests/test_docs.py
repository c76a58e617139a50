"""The documentation: the README as an entry point, links that resolve, and
docs/results.md exactly as ``nibble bench report`` writes it from the JSON in docs/."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nibble import results

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _in_git(path: Path) -> bool:
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "--git-dir"],
                              capture_output=True).returncode == 0
    except OSError:
        return False


def _anchors(page: Path) -> set:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {results._anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


# ---- the README -------------------------------------------------------------------------

def test_readme_is_at_most_150_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move detail into docs/"


def test_readme_set_up_is_what_ci_runs():
    """The two set-up commands are the ones .ci/run executes, verbatim."""
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in ('pip install -e ".[dev]"', "pytest -n 2"):
        assert f"\n{command}\n" in readme, command
        assert command in ci, command


def test_readme_register_list_is_the_register_map():
    """The README's AXI4-Lite register list is wire.axi.REGISTERS, offsets and names in
    order (the fields are in docs/axi.md, which test_rtl_axi_lite keeps equal)."""
    import re

    from wire.axi import REGISTERS
    readme = " ".join((ROOT / "README.md").read_text().split())
    listed = re.findall(r"0x([0-9A-F]{2}) ([A-Z_]+)", readme)
    assert listed == [(f"{r.offset:02X}", r.name) for r in REGISTERS]


def test_readme_mutation_row_is_the_campaigns():
    """The README's mutation table is docs/mutate_t4.json's (killed of non-equivalent
    per unit, the total and its score, the equivalent count)."""
    import re
    m = json.loads((ROOT / "docs" / "mutate_t4.json").read_text())["mutate"]
    readme = (ROOT / "README.md").read_text()
    units = ("PE", "array", "controller", "log4 unit", "requantizer", "rescaler")
    assert f"  | {' | '.join(units)} | total |" in readme
    cells = [f"{u['killed']}/{u['sampled'] - u['equivalent']}" for u in
             (m["units"][name] for name in units)]
    t = m["total"]
    total = (f"{t['killed']}/{t['sampled'] - t['equivalent']} = {100 * t['score']:.1f} % "
             f"({t['equivalent']} equivalent)")
    assert f"  | {' | '.join(cells)} | {total} |" in readme, re.findall(r"  \| \d+/.*", readme)


# ---- links ------------------------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    """Every relative link (and image) names an existing file, and a #fragment names a
    heading of the page it points into."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    links = LINK.findall(text)
    broken = []
    for target in links:
        if re.match(r"[a-z]+:", target):               # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(target)
        elif fragment and dest.suffix == ".md" and fragment not in _anchors(dest):
            broken.append(target)
    assert not broken, f"{page.name}: links that do not resolve: {broken}"


def test_docs_files_named_in_the_code_exist():
    """A docs/ page or figure named in a docstring, comment or page exists (the
    README and rtl/accelerator.py once named a docs/architecture.md that did not)."""
    named = re.compile(r"docs/[\w./*-]+\.(?:md|png)")
    missing = set()
    for folder in ("golden", "wire", "nibble", "rtl", "fpga", "verif", "edatools", "tests", "docs"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".md") and "sim_build" not in path.parts:
                for name in named.findall(path.read_text()):
                    if not list(ROOT.glob(name)):
                        missing.add(f"{name} (in {path.relative_to(ROOT)})")
    for name in named.findall((ROOT / "README.md").read_text()):
        if not list(ROOT.glob(name)):
            missing.add(f"{name} (in README.md)")
    assert not missing, sorted(missing)


# ---- docs/results.md --------------------------------------------------------------------

@pytest.mark.skipif(not _in_git(ROOT), reason="dating the JSON files needs a git checkout")
def test_results_page_is_what_the_generator_writes():
    want = results.render(DOCS)
    got = (DOCS / "results.md").read_text()
    assert got == want, ("docs/results.md differs from what `nibble bench report` writes "
                         "from the files in docs/: run it and commit docs/results.md")


def test_results_page_renders_a_json_with_the_commands_table_and_its_date(tmp_path):
    """A JSON that records its measurement is tabulated by the command's own formatter and
    dated from the record; a missing one is marked as not yet generated."""
    from nibble.bench import format_utilization

    rows = [{"tile": 4, "lanes": 4, "mode": m, "cycles": 4200 + i, "ideal": 4096,
             "utilization": 4096 / (4200 + i), "bit_exact": True}
            for i, m in enumerate(("forward", "backward", "weight_grad"))]
    (tmp_path / "utilization.json").write_text(json.dumps(
        {"utilization": rows, "measured": {"date": "2026-12-24", "commit": "abc1234"}}))
    page = results.render(tmp_path)
    section = page.split("## Array utilization")[1].split("\n## ")[0]
    assert format_utilization(rows) in section
    assert "[`docs/utilization.json`](utilization.json): measured 2026-12-24 at abc1234" in section
    assert "**Not yet generated:** no `docs/utilization_t8_l4.json`" in section
    assert "**Not yet generated:** no `docs/study.json`" in page


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_results_page_dates_an_undated_json_by_its_commit_and_refuses_it_uncommitted(tmp_path):
    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t",
                               "-c", "user.email=t@example.com", *args],
                              capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    docs = tmp_path / "docs"
    docs.mkdir()
    # an area study as fpga.area.write_json writes it: no "measured" record
    study = json.loads((DOCS / "area.json").read_text())
    study.pop("measured", None)
    (docs / "area.json").write_text(json.dumps(study))
    with pytest.raises(ValueError, match="area.json records no measurement date "
                                         "and is not committed"):
        results.render(docs)
    git("add", "-A")
    git("commit", "-q", "-m", "area")
    commit, date = git("log", "-1", "--format=%H %cs").split()
    page = results.render(docs)
    assert (f"[`docs/area.json`](area.json): last committed {date} in "
            f"{commit[:7]}") in page
    # the file's own array figures reach the page
    area = study.get("area", study)
    array = next(r for r in area["per_mac"] if r["design"] == "array" and r.get("tile") == 16
                 and r.get("family", "ecp5") == "ecp5")
    row = next(line for line in page.splitlines() if "T=16 array+rescaler" in line)
    assert row.split()[2:6] == [str(array[k]) for k in ("macs", "lut4", "carry", "luts")]


def test_bench_report_writes_and_checks_the_page(tmp_path):
    def nibble(*args):
        return subprocess.run([sys.executable, "-m", "nibble", "bench", "report",
                               "--docs", str(tmp_path), *args],
                              capture_output=True, text=True, cwd=ROOT)

    assert nibble("--check").returncode == 1               # no page yet
    proc = nibble()
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "results.md").read_text() == results.render(tmp_path)
    assert nibble("--check").returncode == 0
    (tmp_path / "results.md").write_text((tmp_path / "results.md").read_text() + "edited\n")
    proc = nibble("--check")
    assert proc.returncode == 1 and "differs" in proc.stderr


def test_a_commands_json_becomes_the_table_it_printed(tmp_path):
    """End to end: what `nibble bench utilization --json` prints is what the results page
    shows from its JSON, dated by the stamp the command recorded."""
    proc = subprocess.run([sys.executable, "-m", "nibble", "bench", "utilization", "--sizes",
                           "2", "--tiles", "2", "--json", str(tmp_path / "utilization.json")],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout[proc.stdout.index("| T | lanes |"):].split("\n\n")[0].strip()
    stamp = json.loads((tmp_path / "utilization.json").read_text())["measured"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", stamp["date"]) and stamp["commit"]
    page = results.render(tmp_path)
    assert printed in page
    assert f"measured {stamp['date']} at {stamp['commit']} (recorded in the file)" in page
