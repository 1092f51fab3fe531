"""Prefect flows that compose stages into recipes, and the `flow` command line. Composes; computes nothing."""
