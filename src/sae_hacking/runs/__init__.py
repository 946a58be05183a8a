"""Run directories, atomic writes and self-describing results files."""
