"""Thin command-line wrappers, one module per verb, over the library API."""
