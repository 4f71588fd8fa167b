# bridged in a container: foreground, non-root, messages on stdout by default.
#   docker build -t bridged .
#   docker run --rm -e BRIDGED_BROKER_URL=amqp://user:pass@rabbit:5672// \
#     -v "$PWD/my-bridged.yaml:/etc/bridged/bridged.yaml:ro" bridged
FROM python:3.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridged ./bridged
RUN pip install --no-cache-dir . \
 && rm -rf /src \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin bridged \
 && mkdir -p /etc/bridged /var/log/bridged \
 && chown 10001:10001 /var/log/bridged

COPY etc/docker.yaml /etc/bridged/bridged.yaml

USER 10001:10001
WORKDIR /var/log/bridged
VOLUME ["/var/log/bridged"]

# bridged touches the health file once a second while no binding is wedged
# (the same test as the systemd watchdog); stale for 30 s = unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, sys, time; sys.exit(time.time() - os.stat('/tmp/bridged.health').st_mtime > 30)"]

ENTRYPOINT ["bridged", "--config", "/etc/bridged/bridged.yaml", "--health-file", "/tmp/bridged.health"]
CMD ["--log-format", "json"]
