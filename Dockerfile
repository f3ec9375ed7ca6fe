# partbench in a CUDA runtime image.
#   docker build -t partbench .
#   docker run --gpus all -v partbench-home:/data -v "$PWD/out:/work" partbench run --suite smoke
# The install step is the README's (`make install` = `pip install -e ".[dev]"` into .venv): the
# pinned torch 2.14.1 wheel from PyPI is the CUDA 13.0 build and brings its own CUDA libraries, so
# the base image needs only the CUDA runtime/driver glue.
FROM nvidia/cuda:13.0.0-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev make git ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/partbench

# Dependencies first (cached while only the source changes): the metadata plus an empty package.
COPY pyproject.toml README.md Makefile ./
RUN mkdir -p partbench && touch partbench/__init__.py && make install PYTHON=python3

# Then the source (editable install: the venv already points at /opt/partbench/partbench).
COPY . .
RUN touch .venv/.installed \
    && .venv/bin/partbench --help > /dev/null

# Downloads and caches live in a volume (PARTBENCH_HOME); runs write features/, results/ and
# reports/ under the working directory, another volume.
ENV PARTBENCH_HOME=/data \
    PATH=/opt/partbench/.venv/bin:$PATH
RUN useradd --create-home --uid 1000 partbench \
    && mkdir -p /data /work \
    && chown partbench:partbench /data /work
VOLUME ["/data", "/work"]
USER 1000:1000
WORKDIR /work

ENTRYPOINT ["partbench"]
CMD ["--help"]
