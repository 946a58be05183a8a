"""Run directories, atomic writes, self-describing results files, resumable sharded runs.

- :mod:`~sae_hacking.runs.files`: run directories and provenance (``args.yaml``).
- :mod:`~sae_hacking.runs.results`: ``.safetensors(.zst)`` writer (streamed, seekable zstd
  frames) and :class:`~sae_hacking.runs.results.ResultsFile`, which reads a tensor, a range or
  scattered elements without decompressing the whole file; JSON sidecars.
- :mod:`~sae_hacking.runs.shards`: ``--shard i/n`` (every n-th source row).
- :mod:`~sae_hacking.runs.options`: :class:`~sae_hacking.runs.options.RunOptions`, the typed
  settings of how a run runs (output folder, resume, checkpoints, shard).
- :mod:`~sae_hacking.runs.record`: ``run.json``, the one resume rule, output-folder checks.
- :mod:`~sae_hacking.runs.rundir`: :class:`~sae_hacking.runs.rundir.RunDir`, every run folder's
  one life (plan, create, remove on failure, resume), torchrun included.
- :mod:`~sae_hacking.runs.ranks`: this process's place in a torchrun job; rank 0 decides.
- :mod:`~sae_hacking.runs.stream`: :class:`~sae_hacking.runs.stream.Accumulator` (what a run
  counts) and :class:`~sae_hacking.runs.stream.StreamRun` (checkpoint every N prompts, resume,
  results), plus :func:`~sae_hacking.runs.stream.shard_batches`.
- :mod:`~sae_hacking.runs.merge`: exact, checked merging of shard results.
"""
