"""Shapes the fused kernels handle, importable without Triton (dispatch checks them)."""

#: Largest set (number of modalities M) one set-attention program holds in registers.
MAX_SET_SIZE = 32
#: Largest attention head dimension of the set-attention kernels.
MAX_HEAD_DIM = 256
#: Largest latent dimension of the fused mixture log-density.
MAX_LATENT_DIM = 4096
