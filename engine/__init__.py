"""StyleCast engine: StyleGAN2 synthesis, latent geometry, audio, motion and the CLIs."""
