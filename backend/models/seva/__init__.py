"""Stable Virtual Camera (SEVA), clean-room: network, loader, cameras, denoiser, sampler, windows."""

from .network import SevaConfig, SevaNet, timestep_embedding

__all__ = ["SevaConfig", "SevaNet", "timestep_embedding"]
