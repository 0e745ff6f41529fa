# One image for every permit-push role: `serve`, `worker`, `db upgrade`, `tokens ...`.
# docker-compose.yml picks the role with `command:`; see docs/running.md.
#
# No HEALTHCHECK here: the right probe differs by role (HTTP for `serve`, Redis
# registration for `worker`, none for the one-shot `db upgrade`), so compose sets it.

# No `# syntax=` line: it makes BuildKit pull a frontend image, and builds must work
# offline. PYTHON_IMAGE lets `make test-compose` build on a local stand-in of the same
# Python (tests/compose/images/python); everywhere else it is the official image.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE} AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Dependencies come from the lock file only, each pinned and checked against its sha256,
# through deploy/install-locked: first the locked installer (pip, and the build backend
# setuptools and wheel), so the lock is read by the pip it was made for and not by the base
# image's, then requirements.lock. Installing the project itself then downloads nothing
# (--no-deps --no-build-isolation). `make lock` writes the locks.
# The source is installed as a regular package, not run from the checkout, so the
# image holds exactly what `pip install .` ships (migrations included as package data).
COPY . /src
RUN /src/deploy/install-locked python /src/requirements.lock \
 && pip install --no-deps --no-build-isolation /src

# Container probes (slim has no curl): `http URL` for the receiver, `rq-worker` for workers.
COPY deploy/healthcheck.py /usr/local/bin/permit-push-healthcheck
RUN chmod 0755 /usr/local/bin/permit-push-healthcheck

# A fixed numeric uid, so orchestrators that insist on runAsNonRoot can verify it.
# Its home is the working directory, so the default SQLite URL (a relative file)
# is writable when no DATABASE_URL is given.
RUN useradd --create-home --uid 10001 --user-group permit
WORKDIR /home/permit


# rq-dashboard runs on top of the project's own install so that it uses the very RQ
# version the workers use (RQ 2 and 3 differ in their Redis layout): its lock file is
# resolved under requirements.lock (deploy/rq-dashboard.in says what it asks for).
FROM base AS rq-dashboard
RUN /src/deploy/install-locked python /src/deploy/rq-dashboard.lock
USER permit
EXPOSE 9181
ENTRYPOINT ["rq-dashboard"]
CMD ["--bind", "0.0.0.0", "--port", "9181"]


# The default (last) stage: the permit-push CLI.
FROM base AS app
USER permit
EXPOSE 8080
ENTRYPOINT ["permit-push"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
