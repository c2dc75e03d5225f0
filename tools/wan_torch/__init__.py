"""Our own PyTorch modules of the Wan structure (official key names): umT5 encoder,
Wan 2.1 VAE, Wan DiT (t2v, ti2v)."""
