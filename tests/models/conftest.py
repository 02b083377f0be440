"""UNet2DModel tests: parity with diffusers' UNet2DModel on Hub-layout checkpoints, loading, compile."""
