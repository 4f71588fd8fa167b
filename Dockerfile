# bridged in a container: foreground, non-root, messages on stdout by default.
#   docker build -t bridged .
#   docker run -d --name bridged -e BRIDGED_BROKER_URL=amqp://bridged@rabbitmq:5672// \
#     -e BRIDGED_BROKER_PASSWORD -e BRIDGED_EXCHANGE=nova bridged
# Debian's Python (3.11, the one the tests run on), in a virtualenv, on Debian's slim image.
FROM docker.io/library/debian:bookworm-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/bridged/bin:$PATH

# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridged ./bridged
RUN python3 -m venv /opt/bridged \
 && /opt/bridged/bin/pip install --no-cache-dir . \
 && rm -rf /src \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin bridged \
 && mkdir -p /etc/bridged /var/log/bridged \
 && chown 10001:10001 /var/log/bridged

COPY etc/docker.yaml /etc/bridged/bridged.yaml

USER 10001:10001
WORKDIR /var/log/bridged
VOLUME ["/var/log/bridged"]

# Prometheus /metrics, /healthz and /readyz (metrics.listen in etc/docker.yaml).
EXPOSE 9125
# Healthy = ready: every binding consumes (503 names those that do not).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:9125/readyz', timeout=4)"]

ENTRYPOINT ["bridged", "--config", "/etc/bridged/bridged.yaml"]
CMD ["--log-format", "json"]
