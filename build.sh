#!/usr/bin/env bash
# Build the sae-hacking Docker image (see ./build.sh --help).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ./build.sh [--cpu | --gpu] [DOCKER BUILD ARGS...]

Build the sae-hacking image from the Dockerfile next to this script.
  --gpu       CUDA base image and the locked (CUDA) build of torch
  --cpu       slim Python base image and the CPU build of torch (a much smaller image)
              default: --gpu when nvidia-smi is on PATH, else --cpu
  -h, --help  show this help
Every other argument (and everything after --) goes to `docker build` as it is,
e.g. --no-cache, --progress=plain, --build-arg TORCH_CPU_INDEX=URL.

Environment: IMAGE, the image name (default sae-hacking); ./run.sh reads it too.

Then: ./run.sh (an interactive shell in the container), where
`uv run sae-hacking ...` and plain `sae-hacking ...` both work.
EOF
}

variant=""
build_args=()

die() {
  echo "build.sh: $1" >&2
  exit 2
}

choose() {
  [[ -z "$variant" || "$variant" == "$1" ]] || die "--cpu and --gpu contradict each other; give one."
  variant="$1"
}

while (($# > 0)); do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    --cpu) choose cpu ;;
    --gpu) choose gpu ;;
    --)
      shift
      build_args+=("$@")
      break
      ;;
    *) build_args+=("$1") ;;
  esac
  shift
done

if [[ -z "$variant" ]]; then
  if command -v nvidia-smi >/dev/null 2>&1; then variant=gpu; else variant=cpu; fi
fi

image="${IMAGE:-sae-hacking}"
cd "$(dirname "${BASH_SOURCE[0]}")"
echo "build.sh: building $image ($variant)" >&2
# ${a[@]+...}: an empty array under `set -u` is an error in bash < 4.4 (macOS).
exec docker build --build-arg "VARIANT=$variant" --tag "$image" \
  ${build_args[@]+"${build_args[@]}"} .
