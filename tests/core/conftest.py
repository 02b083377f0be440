"""Tests of the top-level modules: configs, Hub file lookup, atomic writes, tensors helpers, images."""
