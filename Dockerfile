# The service image: `sfa run` by default; `sfa replay`/`produce`/... as commands.
# Not built in CI (no Docker engine on the CI machines); see deploy/ for compose and k8s.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 sfa
COPY --from=build /install /usr/local
USER sfa
ENV SFA_METRICS_PORT=8000 \
    PYTHONUNBUFFERED=1
EXPOSE 8000
# SIGTERM finishes in-flight batches and commits within 30 s (SPEC 7); give it that long.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
ENTRYPOINT ["sfa"]
CMD ["run"]
