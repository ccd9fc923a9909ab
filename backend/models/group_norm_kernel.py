"""The Triton kernel of ``triton_group_norm`` (see that module), defined at import: Triton decides
at definition whether a kernel is compiled or run by its interpreter (``TRITON_INTERPRET=1``)."""

import triton
import triton.language as tl


@triton.jit
def group_norm_kernel(x_ptr, w_ptr, b_ptr, y_ptr, spatial, per_group, groups, eps,
                      HAS_W: tl.constexpr, HAS_B: tl.constexpr, SILU: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    row = tl.program_id(0)  # one (sample, group): per_group * spatial contiguous elements
    length = per_group * spatial
    base = row.to(tl.int64) * length
    pivot = tl.load(x_ptr + base).to(tl.float32)
    acc = tl.full([BLOCK], 0.0, tl.float32)
    acc2 = tl.full([BLOCK], 0.0, tl.float32)
    for start in range(0, length, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < length
        d = tl.where(mask, tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(tl.float32) - pivot, 0.0)
        acc += d
        acc2 += d * d
    mean_d = tl.sum(acc, axis=0) / length
    rstd = 1.0 / tl.sqrt(tl.maximum(tl.sum(acc2, axis=0) / length - mean_d * mean_d, 0.0) + eps)
    mean = pivot + mean_d
    first_channel = (row % groups) * per_group
    for start in range(0, length, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < length
        y = (tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(tl.float32) - mean) * rstd
        channel = first_channel + offs // spatial
        if HAS_W:
            y = y * tl.load(w_ptr + channel, mask=mask, other=1.0).to(tl.float32)
        if HAS_B:
            y = y + tl.load(b_ptr + channel, mask=mask, other=0.0).to(tl.float32)
        if SILU:
            y = y * tl.sigmoid(y)
        tl.store(y_ptr + base + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
