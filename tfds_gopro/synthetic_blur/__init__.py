"""Folder-style TFDS builder `synthetic_blur`; see its README.md."""
