"""Shapes the fused kernels handle, importable without Triton (dispatch checks them)."""

#: Largest set (number of modalities M) one set-attention program holds in registers.
MAX_SET_SIZE = 32
#: Largest attention head dimension of the set-attention kernels.
MAX_HEAD_DIM = 256
#: Largest padded set, next_power_of_2(M) · next_power_of_2(Dh), one program holds: the
#: backward kernel under two masks cannot hold 32 × 256 without spilling registers
#: (benchmarks/aot_kernels.py), so M > 16 with Dh > 128 is left to the reference.
MAX_SET_ELEMENTS = 4096
#: Largest latent dimension of the fused mixture log-density: the backward kernel cannot
#: hold a 4096-wide row in one program without spilling (benchmarks/aot_kernels.py).
MAX_LATENT_DIM = 1024


def _next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def set_attention_fits(set_size: int, head_dim: int) -> bool:
    """Whether the fused set-attention kernels handle sets of M = `set_size` elements with
    heads of width Dh = `head_dim`."""
    return (
        set_size <= MAX_SET_SIZE
        and head_dim <= MAX_HEAD_DIM
        and _next_power_of_2(set_size) * _next_power_of_2(head_dim) <= MAX_SET_ELEMENTS
    )
