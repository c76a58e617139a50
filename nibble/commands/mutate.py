"""``nibble mutate``: mutation analysis of ``nibble_top`` (:mod:`verif.mutation`)."""

from __future__ import annotations

import time
from pathlib import Path

from .common import positive_int

__all__ = ["NAME", "HELP", "DESCRIPTION", "add_arguments", "run", "mutation_table"]

NAME = "mutate"
HELP = "mutation score of the fast regression (yosys mutate, MCY's flow)"
DESCRIPTION = ("Sample mutations of the nibble_top netlist (yosys mutate -list), build one "
               "Verilator model in which a select input switches each on, run a fixed "
               "regression against golden on every mutant and report how many it kills, per "
               "unit.")


def add_arguments(parser) -> None:
    parser.add_argument("--size", "--tile", dest="tile", type=int, default=4, metavar="T",
                        help="array size (default 4)")
    parser.add_argument("--acc-bits", type=int, default=32, metavar="N")
    parser.add_argument("--count", type=positive_int, default=200, metavar="N",
                        help="mutations to sample (default 200)")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of the sampling and of the regression (default 1)")
    parser.add_argument("--random-gemms", type=int, default=3000, metavar="N",
                        help="random GEMMs after one per coverage bin (default 3,000)")
    parser.add_argument("-j", "--jobs", type=positive_int, default=1, metavar="N",
                        help="run mutants on a local dask cluster of N processes (default 1)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run mutants on the dask cluster at ADDRESS (workers need the "
                             "work directory: a shared file system)")
    parser.add_argument("--workdir", metavar="DIR",
                        help="where the netlists go (default sim_build/mutate_T<T>_s<seed>)")
    parser.add_argument("--equivalent", metavar="PATH",
                        help="a JSON file {mutation: reason} of mutations shown equivalent to "
                             "the design (the yosys mutate command without its -ctrl part); "
                             "they count neither as killed nor against the score")
    parser.add_argument("--prove", action="store_true",
                        help="try to prove every survivor equivalent with yosys on its unit's "
                             "cone (verif.mutation.prove_equivalent); a proven one counts as "
                             "equivalent, the others keep the prover's answer in the report")
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")


def run(args) -> int:
    import json
    from dataclasses import asdict

    from golden.params import NibbleParams, check_tile
    from verif.campaign import run_tasks
    from verif.fast_sim import build_library
    from verif.mutation import (kill_chunk, killer_for, load_equivalent, prove_equivalent,
                                sample, score)
    from verif.runner import SIM_BUILD

    params = NibbleParams(tile=check_tile(args.tile), acc_bits=args.acc_bits)
    if args.random_gemms < 0:
        raise ValueError(f"--random-gemms must be 0 or more, got {args.random_gemms}")
    workdir = Path(args.workdir or SIM_BUILD / f"mutate_T{params.tile}_a{params.acc_bits}"
                   f"_s{args.seed}_n{args.count}")
    start = time.perf_counter()
    print(f"mutate: T={params.tile} acc_bits {params.acc_bits}, {args.count} mutations, seed "
          f"{args.seed}; sampling with yosys in {workdir}...", flush=True)
    mutations, netlist = sample(params, args.count, args.seed, workdir)
    print(f"  {len(mutations)} mutations; building the mutated model (Verilator)...", flush=True)
    build_library(params, netlist)
    # the tasks' common part; in process, the campaign reuses this Killer (and golden's
    # results) for every mutant
    base = {"params": asdict(params), "netlist": str(workdir / "mutated.v"), "seed": args.seed,
            "random_gemms": args.random_gemms}
    baseline = killer_for(base).run(0)
    if baseline["killed"]:          # the flow, not a mutant: stop
        raise RuntimeError(f"the netlist with no mutation fails the regression ({baseline['how']} "
                           f"at GEMM {baseline['gemm']}: {baseline['detail']})")
    print(f"  no mutation: {baseline['gemms_run']} GEMMs pass; running the mutants...",
          flush=True)
    chunk = 10
    tasks = [{**base, "selects": [m.select for m in mutations[i:i + chunk]]}
             for i in range(0, len(mutations), chunk)]
    done = []

    def progress(results):
        done.extend(results)
        print(f"  [{len(done)}/{len(mutations)}] killed so far: "
              f"{sum(r['killed'] for r in done)}", flush=True)

    results = [r for part in run_tasks(kill_chunk, tasks, workers=args.jobs,
                                       scheduler=args.scheduler, progress=progress)
               for r in part]
    reasons = load_equivalent(args.equivalent) if args.equivalent else {}
    killed = {r["select"]: r["killed"] for r in results}
    proofs = {}
    if args.prove:
        live = [m for m in mutations if not killed[m.select]]
        print(f"  proving {len(live)} survivors equivalent (yosys, per unit cone)...", flush=True)
        for m in live:
            proofs[m.select] = prove_equivalent(m, workdir)
            print(f"  [{m.select}] {'proven' if proofs[m.select]['proven'] else 'not proven'}"
                  f" ({proofs[m.select]['seconds']:.0f} s)", flush=True)
    proven = {s for s, p in proofs.items() if p["proven"]}
    equivalent = {m.select: "equivalent" for m in mutations
                  if m.key in reasons or m.select in proven}
    report = score(results, mutations, equivalent)
    report["equivalent"] = [
        {"select": m.select, "unit": m.unit, "command": m.command, "killed": killed[m.select],
         "proof": "solver" if m.select in proven else "hand",
         "reason": (f"proven by yosys: {proofs[m.select]['method']} on the cut of "
                    f"{proofs[m.select]['cut']} ({proofs[m.select]['detail']})"
                    if m.select in proven else reasons[m.key]),
         **({"prover": proofs[m.select]} if m.select in proofs else {})}
        for m in mutations if m.select in equivalent]
    for s in report["survivors"]:
        if s["select"] in proofs:
            s["prover"] = proofs[s["select"]]
    wall = time.perf_counter() - start
    print("\n" + mutation_table(report))
    print(f"\nwall time {wall / 60:.1f} min on {args.jobs} job(s)")
    for s in report["survivors"]:
        print(f"  survived: [{s['unit']}] {s['command']}")
    for e in report["equivalent"]:
        print(f"  equivalent ({e['proof']}): [{e['unit']}] {e['command']}: {e['reason']}"
              + (" (but killed: the reason is wrong)" if e["killed"] else ""))
    if args.json:
        from ..results import measurement_stamp

        kills = {}
        for r in results:
            if r["killed"]:
                kills[r["how"]] = kills.get(r["how"], 0) + 1
        doc = {"mutate": {"tile": params.tile, "acc_bits": params.acc_bits, "count": args.count,
                          "seed": args.seed, "random_gemms": args.random_gemms,
                          "prove": args.prove,
                          "regression_gemms": baseline["gemms_run"], "jobs": args.jobs,
                          "wall_seconds": wall, "killed_by": kills, **report,
                          "results": results},
               "measured": measurement_stamp()}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        print(f"\nwrote {args.json}")
    return 0


def mutation_table(report) -> str:
    """Markdown table of a :func:`verif.mutation.score` report: per unit and in total."""
    lines = ["| unit | sampled | killed | equivalent | survived | score |",
             "|---|---|---|---|---|---|"]
    for name, row in [*report["units"].items(), ("total", report["total"])]:
        lines.append(f"| {name} | {row['sampled']} | {row['killed']} | {row['equivalent']} | "
                     f"{row['survived']} | {100 * row['score']:.1f}% |")
    return "\n".join(lines)
