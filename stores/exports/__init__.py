"""Exports of a dataset version: the Hugging Face Hub layout, pages for people, trainer formats."""
