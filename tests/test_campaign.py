"""verif/campaign.py: one executor for campaigns, in process or on dask.distributed."""

import os

import pytest

from verif.campaign import run_tasks


def _square_and_pid(x):
    return x * x, os.getpid()


def _fails(x):
    if x == 2:
        raise ArithmeticError(f"task {x} failed")
    return x


def test_in_process_runs_in_order_and_reports_progress():
    seen = []
    results = run_tasks(_square_and_pid, [3, 1, 2], progress=seen.append)
    assert [r for r, _ in results] == [9, 1, 4] and seen == results
    assert {pid for _, pid in results} == {os.getpid()}


def test_local_cluster_runs_tasks_in_other_processes_and_keeps_task_order():
    seen = []
    results = run_tasks(_square_and_pid, list(range(8)), workers=2, progress=seen.append)
    assert [r for r, _ in results] == [x * x for x in range(8)]
    assert sorted(seen) == sorted(results)                 # every result reported once
    assert os.getpid() not in {pid for _, pid in results}  # worker processes ran them


def test_a_failing_task_raises_its_own_error():
    with pytest.raises(ArithmeticError, match="task 2 failed"):
        run_tasks(_fails, [1, 2, 3])
    with pytest.raises(ArithmeticError, match="task 2 failed"):
        run_tasks(_fails, [1, 2, 3], workers=2)


def test_bad_settings_are_one_line_errors(monkeypatch):
    monkeypatch.setattr("verif.campaign.CONNECT_TIMEOUT", "2s")
    with pytest.raises(ValueError, match="workers must be at least 1"):
        run_tasks(_fails, [1], workers=0)
    with pytest.raises(ValueError, match="no dask scheduler at tcp://127.0.0.1:9"):
        run_tasks(_fails, [1], scheduler="tcp://127.0.0.1:9")
