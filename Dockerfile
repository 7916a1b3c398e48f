# One image for every service of shared/services.py: the command picks it, e.g.
#   python -m shared.cli run --config config/orders.yaml orders.service   (nameko run, quiet)
#   python -m scripts.wait_and_migrate config/users.yaml config/orders.yaml
# Configuration comes from environment variables only (see deploy/README.md).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtualenv with the pinned dependencies and the project -------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN python -m venv /opt/venv
COPY constraints.txt ./
# setuptools stays at 80.8.0: the `nameko` command of 2.14.1 imports
# pkg_resources, which warns on 80.9-81 and is gone from 82 on.
RUN pip install -c constraints.txt setuptools==80.8.0 wheel==0.48.0
# Dependencies first, from the declarations alone, so this layer is reused
# while only the code changes.
COPY setup.cfg pyproject.toml README.md ./
RUN pip install --no-build-isolation -c constraints.txt . \
 && pip uninstall -y nameko-shop
# The project as .dockerignore leaves it (no tests, bench, docs, deployment files,
# virtualenv or local databases): shared/ and every service's folder, which
# setup.cfg's `packages = find:` installs without naming them.
COPY . ./
# ... and no installer in what the runtime stage copies: pip and wheel leave
# the virtualenv; setuptools stays (`nameko` imports its pkg_resources).
RUN pip install --no-build-isolation --no-deps -c constraints.txt . \
 && pip uninstall -y pip wheel

# --- runtime: the virtualenv, the configs and the entry scripts ------------
FROM ${PYTHON_IMAGE} AS runtime
# No package installer in the image: the base image's own pip, setuptools and
# wheel, their commands and the pip that ensurepip would install go (the
# virtualenv does not see the system site-packages, so nothing uses them).
RUN sites=$(python -c 'import site; print(" ".join(site.getsitepackages()))') \
 && ensurepip=$(python -c 'import ensurepip, os; print(os.path.dirname(ensurepip.__file__))') \
 && for site in $sites; do \
      rm -rf "$site"/pip "$site"/pip-* "$site"/setuptools "$site"/setuptools-* \
             "$site"/pkg_resources "$site"/_distutils_hack "$site"/distutils-precedence.pth \
             "$site"/wheel "$site"/wheel-*; \
    done \
 && rm -rf "$ensurepip" /usr/share/python-wheels \
 && rm -f /usr/local/bin/pip /usr/local/bin/pip3* /usr/local/bin/wheel /usr/bin/pip /usr/bin/pip3*
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONWARNINGS=ignore::DeprecationWarning \
    ENVIRONMENT=production \
    LOG_FORMAT=json
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY config ./config
COPY scripts/__init__.py scripts/run.py scripts/wait_and_migrate.py scripts/broker_setup.py ./scripts/
# what `python -m scripts.broker_setup` imports into the vhost before it creates the users
COPY rabbitmq/definitions.json ./rabbitmq/
# numeric, so Kubernetes can check runAsNonRoot without reading /etc/passwd
USER 10001:10001
# the default command's port (the gateway's API); every other service listens on
# the port of its WEB_SERVER_ADDRESS, which compose and Kubernetes declare
EXPOSE 8000
# Liveness of whichever service runs: its /health on the port of WEB_SERVER_ADDRESS.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('WEB_SERVER_ADDRESS', '0.0.0.0:8000').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=2)"]
CMD ["python", "-m", "shared.cli", "run", "--config", "config/gateway.yaml", "gateway.service"]
