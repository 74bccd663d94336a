# agent-tasks: the GraphQL API server. Point it at a MongoDB replica set with MONGODB_URI
# (the embedded mongod is meant for development; in a container, use a real replica set or Atlas).
FROM python:3.11-slim

# Set TRUSTED_HOSTS to the host names clients use to reach the container (a service name, a domain):
# requests whose Host header is not loopback or one of those are refused (DNS-rebinding protection).
# Bound to 0.0.0.0, AUTH_MODE=auto requires credentials: create a key first (`docker run … agent-tasks keys
# create --name admin --scopes read,write,admin`), or configure JWT_ISSUER; AUTH_MODE=open only on a private network.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOST=0.0.0.0 PORT=8000
WORKDIR /srv
COPY pyproject.toml README.md ./
COPY app ./app
COPY agent_tasks_client ./agent_tasks_client
RUN pip install --no-cache-dir . && useradd --create-home agent
USER agent
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,os;urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/healthz')"
CMD ["agent-tasks", "serve"]
