# The one service image: `sfa run` by default, `sfa replay`/`produce`/`generate` as commands,
# and the Dask scheduler and workers with `--entrypoint dask` (`dask scheduler`, `dask worker`),
# so the service and its cluster always run the same Python, Dask and engine versions.
#
#   docker build -t sfa:latest .            # a Docker engine: the default python:3.11-slim base
#   make image                              # no engine: podman + a debootstrap base (scripts/image.sh)
#
# BASE is an argument rather than two literal FROMs because `--from` replaces only the
# first FROM; any base works whose /usr/local is a Python 3.11 prefix with pip on PATH.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --no-cache-dir --disable-pip-version-check --prefix=/install .

FROM ${BASE}
RUN useradd --create-home --uid 10001 --user-group sfa
COPY --from=build /install /usr/local
USER 10001:10001
WORKDIR /home/sfa
# All interfaces inside the container, so Prometheus and the kubelet reach the port; the
# service's own default is loopback (SFA_METRICS_ADDRESS).
ENV SFA_METRICS_PORT=8000 \
    SFA_METRICS_ADDRESS=0.0.0.0 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
EXPOSE 8000
# SIGTERM finishes in-flight batches and commits within 30 s (SPEC 7); give it that long.
STOPSIGNAL SIGTERM
# Probes the port the container is configured with (SFA_METRICS_PORT), not a literal 8000;
# 0 turns the endpoint off (SPEC 10), so there is nothing to probe and the check passes.
# The Dask containers override this with the scheduler's or worker's own /health.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; p = os.environ.get('SFA_METRICS_PORT') or '8000'; sys.exit(0 if p == '0' else u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=4).status != 200)"]
# sfa-supervise runs `sfa` as its child: a death by signal (a native crash has no Python
# traceback) becomes one JSON line and the shell's exit code, with the core-file limit
# raised. A core lands in the working directory, or in SFA_CORE_DIR when set; compose and
# Kubernetes set it to a volume on /home/sfa/cores for `sfa run` (docs/operations.md). It is
# not set here because it is also the child's working directory, and `sfa replay` takes
# relative paths.
RUN mkdir -p /home/sfa/cores
ENTRYPOINT ["sfa-supervise", "sfa"]
CMD ["run"]
