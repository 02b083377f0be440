"""Project tests: the docs build, the examples run, the benchmarks start."""
