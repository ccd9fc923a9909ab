"""The GPU memory estimate (issue 15's preflight) against the measured peaks it is built from."""

from __future__ import annotations

import pytest

from backend import preflight


def test_the_estimate_reproduces_the_measured_peaks_and_grows_with_pixels_and_frames():
    for task, (peak, size) in preflight.MEASURED.items():
        assert preflight.memory_estimate_gib(task, size, 21) == pytest.approx(peak)
    small, big = preflight.memory_estimate_gib("relight_text", 384), preflight.memory_estimate_gib("relight_text", 768)
    assert small < 9.19 < big
    assert preflight.memory_estimate_gib("relight_text", 576, 11) < 9.19
    assert preflight.memory_estimate_gib("couple_images", 576) is None


def test_advice_says_what_fits():
    assert preflight.advice("relight_text", 576, 21, 80.0) is None
    text = preflight.advice("stylize", 576, 21, 8.0)
    assert "needs about 10.8 GiB" in text and "Working Size" in text
    size = int(text.split("Working Size ")[1].split()[0])
    assert preflight.memory_estimate_gib("stylize", size) + preflight.HEADROOM_GIB <= 8.0  # the advice really fits
    assert "too little for it at any size" in preflight.advice("stylize", 576, 21, 4.0)
