# Production image: `make image`. Runs `pfcon serve` (uvicorn) as a non-root user.
#
# BASE_IMAGE: any Debian-like image with Python >= 3.11 and its venv module (the
# default from Docker Hub, or one made locally with debootstrap where no registry is
# reachable). The build needs no network when a wheelhouse is given: `make image`
# builds one on the host into .image-wheels/ (pip wheel), and the build installs from
# it with --no-index; without it, pip installs from the package index.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
COPY . /src
RUN python3 -m venv /opt/pfcon \
 && if [ -d /src/.image-wheels ]; then \
        /opt/pfcon/bin/pip install --no-cache-dir --no-index --find-links /src/.image-wheels "pfcon[swift]"; \
    else \
        /opt/pfcon/bin/pip install --no-cache-dir "/src[swift]"; \
    fi

FROM ${BASE_IMAGE}
COPY --from=build /opt/pfcon /opt/pfcon
RUN (useradd --system --uid 10001 --home-dir /home/pfcon --create-home pfcon 2>/dev/null \
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
# The Docker socket is group-owned: run with --group-add <gid of the socket>.
CMD ["pfcon", "serve"]
