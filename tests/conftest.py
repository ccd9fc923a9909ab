"""Settings the whole test session needs before any code under test is imported."""

import os

import torch

if not torch.cuda.is_available():
    # Without CUDA, Triton kernels (backend/models/triton_group_norm.py) run only in Triton's
    # interpreter, and Triton reads this switch once, when it is first imported
    os.environ.setdefault("TRITON_INTERPRET", "1")
