"""pytest entry for ``nibble regress -j N``: one test per shard of the plan named by
``$NIBBLE_REGRESS_PLAN`` (see :mod:`verif.regress`). Not part of the default ``pytest``
run (it lives outside ``tests/``)."""

import json
import os

import pytest

from verif.regress import PLAN_ENV, Shard, run_shard

_PLAN = json.loads(open(os.environ[PLAN_ENV]).read()) if PLAN_ENV in os.environ else []


@pytest.mark.parametrize("index", range(len(_PLAN)),
                         ids=[f"T{s['tile']}-seed{s['seed']}" for s in _PLAN])
def test_shard(index):
    shard = Shard(**_PLAN[index])
    outcome = run_shard(shard)
    assert outcome["tests"] > 0 and outcome["failed"] == 0, (
        f"T={shard.tile}: {outcome['failed']} failed; see {outcome['results']}; reproduce with "
        f"nibble regress --size {shard.tile} --seed {shard.seed} --gemms {shard.gemms}")
