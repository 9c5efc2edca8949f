# syntax=docker/dockerfile:1
# The twin's container image: every service (`twin serve NAME`), the migrations
# (`twin db migrate`) and the CLI. JAX_VARIANT=cuda adds the CUDA 12 plugins for the
# what-if batches of the twin pod on a GPU node; the default image is CPU only.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ARG JAX_VARIANT=cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --upgrade pip "setuptools>=69" wheel
# Only what the services import: no tests, benchmarks or node tooling in the image.
WORKDIR /app
COPY pyproject.toml README.md ./
COPY twin_core ./twin_core
COPY services ./services
COPY proto/gen/python ./proto/gen/python
COPY scenarios ./scenarios
# Editable (compat mode: a plain .pth, no import hooks) so that the code lives in /app,
# where `skaffold dev` syncs edited files; the .pth below adds the generated protobuf
# import root, which compat mode leaves out.
RUN pip install --config-settings editable_mode=compat -e . \
    && echo /app/proto/gen/python \
       > "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/twin-proto.pth"
# The CUDA plugins must match the installed jax exactly.
RUN if [ "$JAX_VARIANT" = "cuda" ]; then \
        pip install "jax[cuda12]==$(python -c 'import jax; print(jax.__version__)')"; \
    elif [ "$JAX_VARIANT" != "cpu" ]; then \
        echo "JAX_VARIANT must be cpu or cuda, not $JAX_VARIANT" >&2; exit 1; \
    fi
# Byte-compile now: the root filesystem is read-only at run time.
RUN python -m compileall -q /app/twin_core /app/services /app/proto/gen/python \
    && twin --help > /dev/null

FROM ${PYTHON_IMAGE}
ARG JAX_VARIANT=cpu
LABEL org.opencontainers.image.title="ai-factory-twin" \
      org.opencontainers.image.description="AI Factory Twin services and CLI" \
      org.opencontainers.image.licenses="Apache-2.0" \
      ai-factory-twin.jax-variant="${JAX_VARIANT}"
# /tmp is the only writable path in the chart (readOnlyRootFilesystem): every cache goes
# there. Bytecode was compiled in the builder and is never written at run time.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/.cache
RUN groupadd --system --gid 10001 twin \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin twin
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
WORKDIR /app
USER 10001:10001
# gRPC API, and the plaintext grpc.health.v1 port for kubelet probes.
EXPOSE 50051 8081
ENTRYPOINT ["twin", "serve"]
CMD ["twin"]
