"""Command-line tests: ddpm sample and ddpm info, in-process and as a subprocess."""
