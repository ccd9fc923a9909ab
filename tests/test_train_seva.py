"""SEVA training (train/train_seva.py, train/seva_x0_error.py): loss weights and the x0-error check."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "train"))
from train_seva import loss_weights  # noqa: E402

from backend.models.seva.sampling import SIGMA_TABLE  # noqa: E402


@pytest.mark.parametrize("kind", ["x0-mid", "edm"])
def test_weights_average_one_over_the_timestep_draw(kind):
    # timesteps are drawn uniformly from the table: a mean weight of 1 keeps the learning rate's meaning
    assert loss_weights(SIGMA_TABLE, kind).mean().item() == pytest.approx(1.0, rel=1e-5)


def test_x0_error_weight_at_high_noise():
    """x0 error = sigma^2 x epsilon error: edm keeps its weight flat at high sigma, x0-mid lets it fall as 25 / sigma^2."""
    high = SIGMA_TABLE[SIGMA_TABLE > 10]
    edm = loss_weights(high, "edm") / high**2
    assert (edm.max() / edm.min()).item() < 1.01
    mid = loss_weights(high, "x0-mid") / high**2
    assert (mid[0] / mid[-1]).item() == pytest.approx((high[-1] / high[0]).item() ** 2, rel=1e-4)


def test_unknown_weighting_is_refused():
    with pytest.raises(ValueError, match="unknown weighting"):
        loss_weights(SIGMA_TABLE, "snr")


def test_x0_error_script_on_the_shipped_toy_seva():
    """train/seva_x0_error.py as a developer runs it: the shipped model beats the trivial predictors at low noise."""
    import json
    import os
    import subprocess

    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "train/seva_x0_error.py", "--windows", "4"], cwd=root, capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    err = json.loads(r.stdout.strip().splitlines()[-1])
    sigmas = [err[k] for k in err if k.startswith("sigma")]
    assert len(sigmas) == 5 and sigmas == sorted(sigmas)  # the x0 error grows with the noise
    assert sigmas[0] < 0.5 * min(err["means"], err["copy"])  # measured 0.070 against 0.69 / 0.93 (48 windows, session 8)
