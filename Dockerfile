# Production image: `make image` (or docker build .). Runs uvicorn as a non-root user.
# BASE_IMAGE may be any Debian-like image with Python >= 3.11 (e.g. one built locally
# with debootstrap where no registry is reachable).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python3 -m venv /opt/pfcon \
 && /opt/pfcon/bin/pip install --no-cache-dir ".[swift]"

FROM ${BASE_IMAGE}
COPY --from=build /opt/pfcon /opt/pfcon
RUN (command -v useradd >/dev/null && useradd --system --uid 10001 --home-dir /home/pfcon --create-home pfcon \
     || adduser -S -u 10001 -h /home/pfcon pfcon) \
 && mkdir -p /var/local/storeBase && chown 10001 /var/local/storeBase
ENV PATH=/opt/pfcon/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=5005 \
    APPLICATION_MODE=production
LABEL org.chrisproject.role=pfcon
USER 10001
WORKDIR /home/pfcon
EXPOSE 5005
# The Docker socket is usually group-owned: run with --group-add <gid of the socket>.
CMD ["pfcon", "serve"]
