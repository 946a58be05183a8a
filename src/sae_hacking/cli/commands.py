"""The command table: every subcommand whose flags come from a typed config, declared once.

A row (:class:`~sae_hacking.cli.configargs.Command`) names the command's config class, its
``--help`` texts, the title of its top-level settings (a nested config's settings are titled by
that field's help, on the config), the legacy spellings of its flags (``aliases``; they keep the
legacy command lines working and name no setting: ``run.json``, results and errors use the flat
key), the legacy switches (``--cuda`` for ``--device cuda``) and the settings it shows no flag
for. :data:`METAVARS` holds the placeholder of a setting's value in ``--help``, for every command.
The modules of this package add what a command does (its function) and nothing declarative.
Config classes are named by ``"module:Class"`` and imported when a command's parser is built (all
torch-free), so the toy command imports no language-model layer.
"""

from __future__ import annotations

import dataclasses

from sae_hacking.cli.configargs import Command, Switch

# By flat key; a setting not here shows N (int), F (float), or its key's last word.
METAVARS = {
    "rows": "LATENT",
    "selected_features": "LATENT",
    "just_these": "LATENT",
    "shard": "I/N",
    "resume": "RUN_DIR",
    "abridge_ablations_to": "K",
    "exclude_latent_threshold": "F",
    "frequencies_from": "FILE",
    "magnitude_range": ("LO", "HI"),
    "seeds": "SEED",
    "architectures": "ARCH",
    "activation_cache": "DIR",
    "matryoshka_groups": "SIZE",
    "hook": "HOOK",
    "sae_dir": "DIR",
    "sae": "RELEASE/ID",
    "host": "HOST",
    "allowed_hosts": "NAME",
    "input_path": "PATH",
    "cooccurrence_path": "PATH",
    "saes": "HOOK",
}

CUDA = Switch("--cuda", "device", "cuda", "same as --device cuda")
HIERARCHICAL = Switch(
    "--hierarchical",
    "architecture",
    "hierarchical",
    "train the hierarchical TopK SAE (same as --architecture hierarchical)",
)
SKIP_TORCH_SIGN = Switch(
    "--skip-torch-sign", "compare", "raw", "compare the raw mean effects (same as --compare raw)"
)
MAX_TOKENS = {"max_tokens_in_prompt": ("--max-tokens",)}
LEGACY_TOY = {"perturbation_size": ("--perturbation_size",)}
VALIDATE_HELP = (
    "Plant absorption and check that the search finds it. Builds a tiny Gemma-2-style model, an "
    "ablator SAE at blocks.1.hook_mlp_out with planted pairs (two latents with decoder cosine >= "
    "--min-decoder-cosine that never fire on the same token, splitting one parent feature's "
    "tokens), co-occurring controls (equally similar decoders, firing together) and exclusive "
    "controls (never together, unrelated decoders), and a reader SAE at blocks.2.hook_resid_post; "
    "then runs cooccurrences -> ablate -> pairs through the same code as those commands, all in "
    "one new run directory. Passes when every planted pair is in the output and ranks above every "
    "other pair by effect cosine, and no co-occurring control is in the output. Prints "
    "precision/recall at k = the number of planted pairs for the effect-cosine ranking and for "
    "decoder cosine alone. Exit code 0: pass; 1: fail; 2: bad input."
)

TOOL_METAVARS = {"latents": "LATENT", "input_path": "PATH", "output_path": "PATH"}
READER_LABELS = ("reader_sae_neuronpedia_id", "reader_explanations_file", "reader_evidence")

_ROWS = (
    Command(
        "toy",
        "sae_hacking.toy.config:ToyConfig",
        help="train one SAE on toy data",
        description="Train an SAE on the toy hierarchical dataset (A parents, each with two "
        "perturbed children) and measure feature recovery, pair detection and absorption. Writes "
        "a run directory with run.json, args.yaml, TensorBoard events, "
        "metrics.jsonl/metrics.json, safetensors checkpoints and plots.",
        title="toy dataset, SAE and training",
        aliases=LEGACY_TOY,
        switches=(HIERARCHICAL, CUDA),
    ),
    Command(
        "toy-compare",
        "sae_hacking.toy.config:ToyCompareConfig",
        help="flat vs hierarchical vs Matryoshka vs tiered on toy or SAELens data",
        description="Train flat TopK, hierarchical TopK, Matryoshka and tiered SAEs on identical "
        "data (the toy data or SAELens's synthetic hierarchies) with a matched latent budget over "
        "several seeds; print a side-by-side table (mean ± std) and write markdown, CSV and a "
        "comparison plot.",
        title="comparison",
        aliases=LEGACY_TOY,
        switches=(CUDA,),
        # Settings that a comparison chooses itself, per architecture.
        skip=(
            "architecture",
            "handcode_sae",
            "init",
            "matryoshka_groups",
            "children_per_parent",
            "child_k",
            "nested_weight",
            "resume",
            "plots",
        ),
    ),
    Command(
        "make-tiny-model",
        "sae_hacking.lm.tiny_config:TinyModelConfig",
        help="write a tiny random-weight model with a trained tokenizer, for offline runs",
        description="Write a local Hugging Face model folder with random weights and a BPE "
        "tokenizer trained on generated text. Every LM command accepts it as --model PATH. "
        "Everything is written to a temporary folder first, so a failure leaves nothing behind.",
        title="model",
        skip=("path",),  # a positional argument
    ),
    Command(
        "train",
        "sae_hacking.train.config:TrainConfig",
        help="train an SAE on LM activations",
        description="Train an SAE (relu, topk, batchtopk, jumprelu, hierarchical, matryoshka) on a "
        "language model's activations at one hook, streamed from a text dataset through a "
        "shuffle buffer (optionally cached on disk). Logs MSE, FVU, L0, dead latents and CE loss "
        "recovered on held-out prompts to TensorBoard and metrics.jsonl; checkpoints and resumes "
        "exactly; exports sae.safetensors and, where SAELens has the architecture, a SAELens "
        "folder.",
        title="SAE and training",
        aliases={
            "sae_hidden_dim": ("--sae_hidden_dim",),
            "max_step": ("--max_step",),
            "l1_coefficient": ("--l1_coefficient",),
            "only_count_tokens": ("--only_count_tokens",),
            "n_prompts": ("--abridge",),
            **MAX_TOKENS,
        },
        switches=(HIERARCHICAL, CUDA),
        # The text's settings are shared with other commands; here they count training rows,
        # read after the held-out ones.
        help_overrides={
            "n_prompts": "training rows to use (default: all): the dataset's first "
            "`eval_prompts` rows are held out for evaluation and training reads the N rows after "
            "them; a resumed, unfinished run may change it",
        },
    ),
    Command(
        "cooccurrences",
        "sae_hacking.absorption.configs:CooccurrenceConfig",
        help="count latent co-occurrences over a text stream",
        description="Count, over the real tokens of the first --n-prompts prompts, how often each "
        "pair of ablator-SAE latents is active together (exact integers; the diagonal is each "
        "latent's activation count). Writes cooccurrences.safetensors.zst + cooccurrences.json "
        "to the run directory; checkpoints every --save-frequency prompts; --resume, --shard i/n "
        "and `sae-hacking merge` for long runs.",
        aliases=MAX_TOKENS,
    ),
    Command(
        "latents",
        "sae_hacking.absorption.evidence.options:LatentsConfig",
        help="collect what each latent of one SAE fires on over a text stream",
        description="The cooccurrences pass without the pair counts: for every latent of the SAE, "
        "its exact top activations, a seeded sample of its activations (shown in quantile "
        "bands), a histogram on log-spaced bins, each example's context as token ids, its "
        "activation count, and the logit lens of its decoder direction. Writes "
        "latents.safetensors.zst + latents.json to the run directory; --resume, --shard i/n, "
        "`sae-hacking merge` and torchrun as for cooccurrences. Browse it with "
        "`sae-hacking latents-report RUN`.",
        aliases=MAX_TOKENS,
    ),
    Command(
        "ablate",
        "sae_hacking.absorption.configs:AblateConfig",
        help="selective ablation effects, ablator SAE -> reader SAE",
        description="For each prompt, zero each of the top K active latents of the ablator SAE "
        "(spliced with its error term) in turn and record how the reader SAE's latents change at "
        "the last real token. Writes ablations.safetensors.zst + ablations.json to the run "
        "directory: effects_DE (summed baseline - ablated, one row per ablated latent latents_D), "
        "ablation_counts_D, n_prompts. Shards (--shard i/n) are combined with `sae-hacking merge`.",
        title="ablation",
        aliases=MAX_TOKENS,
    ),
    Command(
        "pairs",
        "sae_hacking.absorption.configs:PairsConfig",
        help="absorption candidates from ablation effects + co-occurrences",
        description="Find pairs of ablated ablator latents that never (or rarely) fire together "
        "yet change the reader SAE alike: absorption candidates. Only latents ablated at least "
        "--min-ablations times are compared; effects are mean effects (sum / ablation count), "
        "compared raw (--compare sign: by sign, as the legacy look_for_pairs.py does by "
        "default); each pair also carries its decoder cosine, "
        "expected co-occurrence under independence (N f1 f2) and Neuronpedia explanations. "
        "Inputs of only some shards of a run, or counted on different datasets, are refused "
        "unless --allow-partial / --allow-other-dataset. Writes pairs.csv, histogram.png, "
        "effect_vs_decoder.png, report.html (its first --evidence-pairs pairs open a "
        "side-by-side view of both latents when the co-occurrence run, or --evidence-from, "
        "holds latent evidence) and, last, pairs.json to a new run directory.",
        title="pairs",
        skip=("resume",),
        switches=(SKIP_TORCH_SIGN,),
        metavars={"evidence_from": "RUN"},
    ),
    Command(
        "validate-absorption",
        "sae_hacking.absorption.planted.run:ValidateConfig",
        help="plant absorption in a tiny model's SAE and check the search finds it",
        description=VALIDATE_HELP,
        title="planted absorption",
    ),
    Command(
        "demo",
        "sae_hacking.absorption.planted.run:ValidateConfig",
        help="see the absorption search work on a tiny model (under a minute)",
        description="See the absorption search work: the whole pipeline (cooccurrences -> ablate "
        "-> pairs) on a tiny model with planted absorption pairs (as validate-absorption; under a "
        "minute on a 2-core CPU), ending with the path of the pairs report (report.html). Exit "
        "code 0: the planted pairs were found; 1: they were not; 2: bad input.",
        title="planted absorption",
    ),
    Command(
        "absorption-bench",
        "sae_hacking.absorption.bench.config:BenchConfig",
        help="absorption that training produces in a tiny LM with known features, and the "
        "search scored against it",
        description="Build tiny LMs whose ablator hook carries known group (parent) and token "
        "(child) directions and whose later block reads the groups; train ablator SAEs of "
        "several architectures and widths (and a reader SAE) with `train`; label every ablator "
        "latent from the truth (parent and absorbing latents, absorption rate); run "
        "cooccurrences -> ablate -> pairs on each and score every ranking of the candidate "
        "pairs (effect cosine by sign and raw, decoder cosine, co-occurrence evidence, a "
        "combined rank) against the absorption pairs. Writes bench.json and bench.md.",
        title="absorption bench",
    ),
    Command(
        "effect-network",
        "sae_hacking.absorption.tools.configs:NetworkConfig",
        help="the graph of ablator -> reader latents with the strongest mean effects",
        description="From an ablate run: the bipartite graph of ablator latents (A) and the "
        "reader latents (R) their ablation moves, keeping the --n-edges strongest mean effects "
        "(half the largest positive, half the most negative; selected exactly while the effect "
        "rows stream). An edge A -> R of weight w means: ablating A lowers R by w on average at "
        "the last token (w > 0, blue) or raises it (w < 0, red); width ~ |w|. Nodes carry their "
        "labels (Neuronpedia explanation, else local evidence, else logit lens). Writes "
        "network.html (self-contained: pan, zoom, hover for label and value, click for "
        "Neuronpedia), network.graphml (Gephi, networkx), edges.csv and, last, network.json.",
        title="effect network",
        skip=("resume",),
        metavars=TOOL_METAVARS,
    ),
    Command(
        "four-tuples",
        "sae_hacking.absorption.tools.configs:TuplesConfig",
        help="ablators A, C and readers B, D with AB, AD, CB positive and CD negative",
        description="From an ablate run: every 4-tuple (A, B, C, D) of ablator latents A != C "
        "and reader latents B != D whose mean effects AB, AD and CB are above --treat-as-zero "
        "and CD below -(--treat-as-zero): A and C both move B, A moves D one way and C the "
        "other. Counted exactly with sign matrices; the --max-results strongest (strength: the "
        "smallest |effect| of the four) are kept, found exactly by bisecting the strength. "
        "Writes tuples.csv, tuples.html (a sortable table with labels) and, last, tuples.json.",
        title="4-tuples",
        skip=("resume",),
        metavars=TOOL_METAVARS,
    ),
    Command(
        "effect-l0",
        "sae_hacking.absorption.tools.configs:EffectL0Config",
        help="how many reader latents each ablation moves (histogram)",
        description="From an ablate run: for each ablated latent, its effect L0, the number of "
        "reader latents whose |mean effect| is above --treat-as-zero (how widely its ablation "
        "spreads downstream), streamed row by row. Writes effect_l0.png (the histogram of "
        "those counts, latents over --exclude-over left out), effect_l0.csv (every latent's "
        "count, ablations and label) and, last, effect_l0.json.",
        title="effect L0",
        skip=("resume",) + READER_LABELS,
        aliases={"treat_as_zero": ("--threshold",)},
        metavars=TOOL_METAVARS,
    ),
    Command(
        "cluster",
        "sae_hacking.absorption.tools.configs:ClusterConfig",
        help="hierarchical clustering of latents by effect or decoder direction",
        description="Cluster latents hierarchically (scipy linkage on cosine distances): the "
        "latents an ablate run ablated by their mean effects (--input-path), or one SAE's "
        "latents by their decoder directions (--by decoder, as gemma_cluster.py did). Writes "
        "cluster.html (a self-contained, collapsible dendrogram with labels: search, hover, "
        "click for Neuronpedia), clusters.csv (each latent's flat cluster when the tree is cut "
        "into --n-clusters) and, last, cluster.json (the linkage matrix, leaf order, labels).",
        title="clustering",
        skip=("resume",) + READER_LABELS,
        metavars=TOOL_METAVARS,
    ),
    Command(
        "decoder-pairs",
        "sae_hacking.absorption.tools.configs:DecoderPairsConfig",
        help="latent pairs of one SAE with the most similar decoder directions",
        description="The --top-k latent pairs of one SAE whose decoder rows have the highest "
        "cosine similarity, computed in blocks like the pairs stage (never e x e in memory); "
        "with --cooccurrence-path only pairs active together on at most "
        "--cooccurrence-threshold tokens (the legacy script's zero co-occurrence). Writes "
        "pairs.csv, report.html and, last, pairs.json in the pairs stage's shape (its "
        "cosine_similarity is the decoder cosine here).",
        title="decoder pairs",
        skip=("resume",) + READER_LABELS,
        metavars=TOOL_METAVARS,
    ),
    Command(
        "serve",
        "sae_hacking.serve.config:ServeConfig",
        help="prompt-highlighting server (HTTP API + web page)",
        description="Serve prompt highlighting over HTTP: the model loads once; SAEs load on "
        "demand (SAELens release + id, or paths under --sae-dir) into a cache of --max-saes. "
        "POST /api/activations gives a prompt's tokens and their latent activations, GET / a web "
        "page to explore them, /docs the API.",
        title="server",
    ),
    Command(
        "highlight",
        "sae_hacking.serve.client:HighlightConfig",
        help="highlight a prompt through a running server",
        description="Send a prompt to a running `sae-hacking serve` and write a self-contained "
        "HTML file (tokens coloured by how strongly the latent fires, hover for values and top "
        "latents) into --output-dir on this machine; prints its path.",
        title="highlight",
    ),
)
COMMANDS = {
    row.name: dataclasses.replace(row, metavars={**METAVARS, **row.metavars}) for row in _ROWS
}
