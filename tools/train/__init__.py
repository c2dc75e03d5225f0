"""Training of the default model: docs/default-model.md."""
import os

# torch parallelises over its own OpenMP threads, whose workers spin-wait between
# parallel regions, while Debian's OpenBLAS (pthread build) runs each matmul on threads
# of its own. On 2 cores the two fought: a DiT step took 1.15 s instead of 0.47 s. One
# BLAS thread ends it without slowing the VAE's convolutions, which passive OpenMP
# waiting did (docs/default-model.md has the measurements). OpenBLAS reads the variable
# when it loads, so it is set here, before any stage imports torch. tools/setup_training.sh
# now selects the OpenMP build, which runs on torch's own threads; the variable is for a
# machine left on the pthread build.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
