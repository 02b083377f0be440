"""Tests that run the same diffusers script against diffusers and ddpm and compare the results (issue 12)."""
