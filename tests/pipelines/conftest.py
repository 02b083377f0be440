"""Pipeline tests: loading, the sampling loop, fast sampling, and image parity with diffusers' pipelines."""
