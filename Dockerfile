# agent-tasks: the GraphQL + REST API server, for a deployment against a MongoDB replica set or Atlas.
#
#   docker build -t agent-tasks .
#   docker run -e MONGODB_URI='mongodb://…/?replicaSet=rs0' -e TRUSTED_HOSTS=127.0.0.1,api.example.com \
#     -p 8000:8000 agent-tasks
#
# The image carries no embedded mongod (the `embedded` extra is not installed): MONGODB_URI is required, and
# `serve` without it exits at once with one line saying so. docs/DEPLOYMENT.md covers the settings (keys,
# TRUSTED_HOSTS, FORWARDED_ALLOW_IPS behind a proxy, WORKERS) and compose.yaml a whole deployment.

# ---- builder: the project's wheel and every dependency's wheel (all published as binary wheels, so no
# compiler is needed here either; the final stage installs from these files alone).
FROM python:3.11-slim AS builder
WORKDIR /build
COPY pyproject.toml README.md ./
COPY app ./app
COPY client ./client
# The server's wheel with the `tracing` extra (the OpenTelemetry SDK and OTLP exporter: off unless OTEL_*
# asks, docs/TRACING.md), without `embedded`; beside it the Python client's (client/, its own distribution,
# which the server depends on: the demo agent). What to install is written beside the wheels for the final
# stage.
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels ./client '.[tracing]' \
    && echo "agent-tasks-graphql[tracing]" > /wheels/requirements.txt

# ---- the image: Python, the wheels installed, no build tools, a user without privileges.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    WORKERS=1
# The server writes nothing but temporary files (with WORKERS > 1, the workers' metrics in a directory
# under /tmp, removed at exit); its home is its working directory (where an optional .env is read).
RUN groupadd --system --gid 10001 agent \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/agent agent
COPY --from=builder /wheels /wheels
RUN python -m pip install --no-cache-dir --no-index --find-links=/wheels -r /wheels/requirements.txt \
    && rm -rf /wheels
# By number, so that a runtime refusing root (Kubernetes' runAsNonRoot) can check it.
USER 10001:10001
WORKDIR /home/agent
EXPOSE 8000
# Ready = serving and MongoDB answering (/readyz); 127.0.0.1 must stay in TRUSTED_HOSTS when it is set.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '8000'), timeout=4)"]
# Exec form: the server is PID 1 and gets SIGTERM itself (it drains, then stops every worker).
CMD ["agent-tasks", "serve"]
