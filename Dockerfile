# syntax=docker/dockerfile:1
# The sae-hacking image: build with ./build.sh, enter with ./run.sh (see their --help).
#   VARIANT=gpu (default): CUDA base, the locked torch build (CUDA 13 wheels from PyPI).
#   VARIANT=cpu: slim Python base, the locked environment with torch swapped for the CPU build.
# Runs as the non-root user `sae` (uid 1000) in /app; results/ there is a link to /results.
ARG VARIANT=gpu

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# `base` and not `runtime`: the torch wheels bring their own CUDA runtime, cuDNN and NCCL, so
# the image only needs the driver hook-up. CUDA 13.0 (not the wheels' 13.2) so that the
# container toolkit accepts every 13.x driver (>= 580), which minor-version compatibility runs.
FROM nvidia/cuda:13.0.2-base-ubuntu24.04 AS base-gpu

FROM python:3.11-slim-bookworm AS base-cpu

# base-${VARIANT} is one of the two stages above, both pinned by tag; hadolint cannot see
# through the variable and takes it for an untagged image.
# hadolint ignore=DL3006
FROM base-${VARIANT}
ARG VARIANT
ARG PYTHON_VERSION=3.11
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

COPY --from=uv /uv /uvx /usr/local/bin/

# Every place the programs write at run time is under /cache or /results (mode 1777), so that
# `--user "$(id -u):$(id -g)"` works too (`uv run` needs a writable cache even without a sync;
# /cache/uv is made below, or the build's cache mount would leave it owned by root). HF_HOME
# and the other cache paths are plain environment variables: override them with `-e` (or
# mount a host cache over /cache/huggingface).
# UV_NO_SYNC: `uv run` uses the environment built here as it is; without it uv would
# "repair" the CPU variant's torch back to the locked CUDA build.
ENV UV_PROJECT=/app \
    VIRTUAL_ENV=/app/.venv \
    PATH=/app/.venv/bin:$PATH \
    UV_NO_SYNC=1 \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_CACHE_DIR=/cache/uv \
    UV_PYTHON_INSTALL_DIR=/opt/uv/python \
    XDG_CACHE_HOME=/cache \
    HF_HOME=/cache/huggingface \
    MPLCONFIGDIR=/cache/matplotlib \
    TRITON_CACHE_DIR=/cache/triton \
    PYTHONUNBUFFERED=1

# Ubuntu 24.04 images ship a user `ubuntu` with uid 1000, the uid most hosts' first user has.
RUN if id -u ubuntu >/dev/null 2>&1; then userdel ubuntu && rm -rf /home/ubuntu; fi \
    && useradd --create-home --uid 1000 --shell /bin/bash sae \
    && mkdir -p /app /results /cache/uv /opt/uv/python \
    && chown sae:sae /app /opt/uv/python \
    && chmod 1777 /results /cache /cache/uv

# Numeric, so that the host (and Kubernetes' runAsNonRoot) can check it without /etc/passwd.
USER 1000:1000
WORKDIR /app

# Dependencies first (this layer is rebuilt only when the lock changes), then the source.
# For the CPU variant the packages only the CUDA build of torch needs are left out, and torch
# itself (the version the lock picks for this Python) comes from the PyTorch CPU index.
# --inexact keeps that torch when uv sync runs again.
COPY --chown=1000:1000 pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/cache/uv,uid=1000,gid=1000 \
    if [ "$VARIANT" = cpu ]; then \
        uv export --locked --no-hashes --no-header --no-annotate --no-emit-project \
            --format requirements.txt --python "$PYTHON_VERSION" \
        | grep -E '^(torch|triton|nvidia-[a-z0-9-]+|cuda-(bindings|pathfinder|toolkit))==' \
        > /app/.cuda-only.txt; \
    elif [ "$VARIANT" = gpu ]; then \
        : > /app/.cuda-only.txt; \
    else \
        echo "VARIANT must be cpu or gpu, got '$VARIANT'." >&2; exit 2; \
    fi \
    && sed -E 's/^([^=]+)==.*/--no-install-package=\1/' /app/.cuda-only.txt \
    | xargs uv sync --locked --inexact --no-install-project --python "$PYTHON_VERSION" \
    && if [ -s /app/.cuda-only.txt ]; then \
        grep '^torch==' /app/.cuda-only.txt > /tmp/torch.txt \
        && uv pip install --python /app/.venv/bin/python --no-deps \
            --index-url "$TORCH_CPU_INDEX" -r /tmp/torch.txt \
        && rm /tmp/torch.txt; \
    fi

COPY --chown=1000:1000 . .
RUN --mount=type=cache,target=/cache/uv,uid=1000,gid=1000 \
    sed -E 's/^([^=]+)==.*/--no-install-package=\1/' /app/.cuda-only.txt \
    | xargs uv sync --locked --inexact --python "$PYTHON_VERSION" \
    && ln -s /results /app/results \
    && python -c "import torch, sae_hacking; print('torch', torch.__version__)"

VOLUME ["/results"]
CMD ["bash"]
