"""verif.scoreboard.first_mismatch, the one comparison of an accelerator's output with
golden's that the tests, benches and training backends share."""

import copy
from dataclasses import replace
from types import SimpleNamespace

import numpy as np

from golden.params import NibbleParams
from verif.scoreboard import first_mismatch
from verif.stimulus import random_job
from wire.gemm_protocol import expected


def test_first_mismatch_names_values_shapes_and_the_saturated_flag():
    params = NibbleParams(tile=4)
    rng = np.random.default_rng(3)
    for _ in range(4):
        job = random_job(rng, params)
        want = expected(job, params)
        assert first_mismatch(job, copy.deepcopy(want), want) is None
        raw = job.out.mode == "raw"
        part = want.raw if raw else want.codes
        field = "acc" if raw else "codes"
        values = np.array(getattr(part, field))
        values[0, 0] += 1

        def output(array):
            changed = replace(part, **{field: array})
            return replace(want, **{"raw" if raw else "codes": changed})

        assert "mismatch at [0, 0]" in first_mismatch(job, output(values), want)
        # (golden's types refuse a wrong shape; a link can still deliver one)
        short = SimpleNamespace(**{f: getattr(part, f) for f in (
            ("acc", "out_exps") if raw else ("codes", "exps"))})
        setattr(short, field, values[:, :-1])
        cut = SimpleNamespace(raw=short if raw else None, codes=None if raw else short,
                              saturated=want.saturated)
        assert "shape RTL" in first_mismatch(job, cut, want)
        flipped = replace(want, saturated=not want.saturated)
        assert "saturated flag" in first_mismatch(job, flipped, want)


def test_random_jobs_leave_out_stochastic_rounding_where_the_hardware_has_none():
    """Parameters built without stochastic rounding never draw a stochastic output
    variant, and asking for one by target is a one-line error."""
    import pytest

    from verif.stimulus import OUTPUT_VARIANTS
    params = NibbleParams(tile=4, stochastic=False)
    rng = np.random.default_rng(2)
    roundings = {random_job(rng, params).out.rounding for _ in range(200)}
    assert "stochastic" not in roundings and {"log", "linear"} <= roundings
    with_hw = {random_job(rng, NibbleParams(tile=4)).out.rounding for _ in range(200)}
    assert "stochastic" in with_hw
    stochastic = next(i for i, v in enumerate(OUTPUT_VARIANTS) if v[1] == "stochastic")
    with pytest.raises(ValueError, match="needs stochastic rounding"):
        random_job(rng, params, target=(0, stochastic, False))
