#!/usr/bin/env bash
# Start a container of the sae-hacking image for local development (see ./run.sh --help).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ./run.sh [OPTIONS] [DOCKER RUN ARGS...] [-- COMMAND [ARGS...]]

Run the sae-hacking image (built by ./build.sh): an interactive shell in /app by default, or
COMMAND. Both `uv run sae-hacking ...` and plain `sae-hacking ...` work in the container.

Meant for local development: some commands are memory hungry, so by default the container
gets 1 CPU and 10 GB of RAM (swap included) and cannot freeze the machine.
  --cpus N          CPU limit (default 1; env RUN_CPUS)
  --memory SIZE     RAM limit, e.g. 10g or 64g (default 10g; env RUN_MEMORY)
  --no-limits       no CPU and no RAM limit (an empty RUN_CPUS / RUN_MEMORY lifts one)
  --gpus GPUS       passed to docker, e.g. --gpus all or --gpus '"device=0,1"'; with GPUs
                    there is no default CPU limit (each GPU process wants a core of its
                    own), the RAM limit stays (raise it with --memory for full-scale runs)
  -v, --volume HOST:/results
                    mount a host folder; HOST must be an absolute path (a bare NAME is a
                    docker named volume). /app/results is a link to /results, so results
                    of `sae-hacking ...` run in /app land there.
  -h, --help        show this help
Every other argument goes to `docker run` as it is, in order (e.g. -e HF_HOME=/results/hf,
-v ~/.cache/huggingface:/cache/huggingface to reuse downloads, --user "$(id -u):$(id -g)"
when your uid is not 1000). HF_TOKEN is passed on when it is set.

Examples:
  ./run.sh
  ./run.sh --gpus all -v /abs/host/results:/results
  ./run.sh -- uv run sae-hacking toy --hierarchical --max-step 1000
  ./run.sh -- uv run pytest tests -m "not slow"

Environment: IMAGE, the image name (default sae-hacking).
EOF
}

die() {
  echo "run.sh: $1" >&2
  exit 2
}

# What docker makes of a relative host part depends on its version (a volume name, an error,
# or a path); refuse it. A bare NAME stays docker's named volume.
check_volume() {
  local spec="$1" host absolute
  [[ "$spec" == *:* ]] || return 0 # -v /path: an anonymous volume, no host part
  host="${spec%%:*}"
  case "$host" in
    /* | "") return 0 ;;
    "~"*) absolute="$HOME${host#\~}" ;;
    . | .. | ./* | ../* | */*) absolute="$PWD/${host#./}" ;;
    *) return 0 ;; # a named volume
  esac
  die "-v needs an absolute host path, got '$host' (try -v $absolute:${spec#*:})."
}

cpus="${RUN_CPUS-1}"
cpus_given=0
[[ -n "${RUN_CPUS+set}" ]] && cpus_given=1
cpus_from=RUN_CPUS
memory="${RUN_MEMORY-10g}"
memory_from=RUN_MEMORY
gpus=""
docker_args=()
command=()

need_value() {
  (($2 >= 2)) || die "$1 needs a value."
}

while (($# > 0)); do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    --cpus)
      need_value "$1" $#
      cpus="$2" cpus_given=1 cpus_from=--cpus
      shift
      ;;
    --cpus=*) cpus="${1#*=}" cpus_given=1 cpus_from=--cpus ;;
    --memory | -m)
      need_value "$1" $#
      memory="$2" memory_from=--memory
      shift
      ;;
    --memory=*) memory="${1#*=}" memory_from=--memory ;;
    --no-limits) cpus="" cpus_given=1 memory="" ;;
    --gpus)
      need_value "$1" $#
      gpus="$2"
      shift
      ;;
    --gpus=*) gpus="${1#*=}" ;;
    -v | --volume)
      need_value "$1" $#
      check_volume "$2"
      docker_args+=(--volume "$2")
      shift
      ;;
    --volume=*)
      check_volume "${1#*=}"
      docker_args+=("$1")
      ;;
    -v?*)
      check_volume "${1#-v}"
      docker_args+=("$1")
      ;;
    --)
      shift
      command=("$@")
      break
      ;;
    *) docker_args+=("$1") ;;
  esac
  shift
done

# Checked here: docker's answer to a bad limit is its usage text. A fraction of a CPU is valid.
if [[ -n "$cpus" ]] && ! [[ "$cpus" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ && "$cpus" =~ [1-9] ]]; then
  die "$cpus_from needs a positive number of CPUs such as 2 or 0.5, got '$cpus'."
fi
if [[ -n "$memory" ]] && ! [[ "$memory" =~ ^[0-9]+(\.[0-9]+)?[kKmMgGtT]?[bB]?$ && "$memory" =~ [1-9] ]]; then
  die "$memory_from needs a size such as 10g or 512m, got '$memory'."
fi

if [[ -n "$gpus" && "$cpus_given" == 0 ]]; then
  cpus=""
fi

# --init: signals (Ctrl-C, docker stop) reach Python, which would ignore them as PID 1.
# --shm-size: torch's DataLoader workers and NCCL between GPUs need more than docker's 64 MB.
run_args=(run --rm --init --interactive --shm-size 2g)
[[ -t 0 && -t 1 ]] && run_args+=(--tty)
[[ -n "$cpus" ]] && run_args+=(--cpus "$cpus")
# The same value for the swap limit: no swap, so a runaway process is killed, not thrashed.
[[ -n "$memory" ]] && run_args+=(--memory "$memory" --memory-swap "$memory")
[[ -n "$gpus" ]] && run_args+=(--gpus "$gpus")
[[ -n "${HF_TOKEN:-}" ]] && run_args+=(--env HF_TOKEN)

echo "run.sh: CPUs ${cpus:-unlimited}, RAM ${memory:-unlimited}${gpus:+, GPUs $gpus}" >&2
exec docker "${run_args[@]}" ${docker_args[@]+"${docker_args[@]}"} "${IMAGE:-sae-hacking}" \
  ${command[@]+"${command[@]}"}
