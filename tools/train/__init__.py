"""Training of the default model: docs/default-model.md."""
import os

# torch's OpenMP workers spin-wait after every parallel region while OpenBLAS (Debian's
# pthread build) runs each matmul on threads of its own. On 2 cores the two fight: a DiT
# step took 1.15 s instead of 0.46 s. Waiting passively changes no result. The variable
# is read when torch loads libgomp, so it is set here, before any stage imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
