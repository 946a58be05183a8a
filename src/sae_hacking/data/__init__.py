"""Data sources: toy feature datasets and text streams."""
