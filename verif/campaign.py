"""Campaigns: many independent tasks (regression shards, mutants, synthesis runs) through
one executor, dask.distributed.

A campaign is a function and a list of picklable tasks; :func:`run_tasks` returns the
results in task order. Where they run is the caller's choice:

* ``scheduler=None`` and ``workers == 1``: in this process, one after the other (no dask
  at all: the default of every command, and what a traceback is easiest to read in);
* ``scheduler=None`` and ``workers > 1``: a dask ``LocalCluster`` of ``workers``
  processes with one thread each (the simulators and yosys are single-threaded and not
  thread-safe, so a process per task is the unit);
* ``scheduler="tcp://host:8786"``: an existing dask cluster (``dask scheduler`` on one
  machine, ``dask worker tcp://host:8786 --nthreads 1`` on each of the others, every
  worker with nibble installed from the same commit). Each worker builds what it
  simulates into its own checkout's ``sim_build`` (the builds are locked per parameter
  set), so a first task per machine and parameter set includes a Verilator build.

``progress`` is called with each result as it arrives (any order), so a long campaign
shows its progress; the return value is always in task order.
"""

from __future__ import annotations

__all__ = ["run_tasks", "CONNECT_TIMEOUT"]

#: How long to look for a remote scheduler before giving up.
CONNECT_TIMEOUT = "20s"


def run_tasks(fn, tasks, *, workers: int = 1, scheduler: str | None = None,
              progress=None) -> list:
    """``[fn(task) for task in tasks]``, in this process, on a local dask cluster of
    ``workers`` processes, or on the dask cluster at ``scheduler``."""
    tasks = list(tasks)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if scheduler is None and (workers == 1 or len(tasks) <= 1):
        results = []
        for task in tasks:
            results.append(fn(task))
            if progress:
                progress(results[-1])
        return results
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:                          # pragma: no cover - a dev dependency
        raise ValueError("campaigns on more than one worker need dask.distributed: "
                         "pip install 'dask[distributed]'") from None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    else:
        cluster = None
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            raise ValueError(f"no dask scheduler at {scheduler}: {exc}") from None
    try:
        # pure=False: a task may be run twice on purpose (the same seed twice)
        futures = client.map(fn, tasks, pure=False)
        if progress:
            for future in as_completed(futures):
                progress(future.result())
        return client.gather(futures)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
