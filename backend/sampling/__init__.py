"""Coupled diffusion sampling: schedules, VE denoiser adapters, participants and the sampler."""

from . import schedules
from .coupled import (
    Cancelled,
    CoupledSample,
    Coupling,
    Participant,
    StepInfo,
    ancestral_sigmas,
    sample_coupled,
    ve_step,
)
from .denoisers import Denoiser, DiscreteDenoiser, EDMDenoiser, FlowDenoiser
from .resample import resize_latents

__all__ = [
    "Cancelled",
    "CoupledSample",
    "Coupling",
    "Denoiser",
    "DiscreteDenoiser",
    "EDMDenoiser",
    "FlowDenoiser",
    "Participant",
    "StepInfo",
    "ancestral_sigmas",
    "resize_latents",
    "sample_coupled",
    "schedules",
    "ve_step",
]
