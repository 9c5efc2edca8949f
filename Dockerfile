# syntax=docker/dockerfile:1
# The twin's container image: every service (`twin serve NAME`), the migrations
# (`twin db migrate`) and the CLI. JAX_VARIANT=cuda adds the CUDA 12 plugins for the
# what-if batches of the twin pod on a GPU node; the default image is CPU only.
# `make image` builds it (image/build.sh: buildah or docker, offline from wheels it
# downloads on the host); `docker build .` and `skaffold build` work as they are.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ARG JAX_VARIANT=cpu
# PIP_CERT: the base's CA bundle, which image/base.sh extends with the host's (a TLS proxy).
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# strip (binutils), for the builder stage only: jaxlib ships its 330 MB library with
# its symbol table, a third of which nothing reads at run time, and pyarrow's libraries
# 34 MB of theirs. Not the libraries auditwheel vendored (numpy.libs, ...): patchelf
# rewrote those, and strip leaves them unloadable ("ELF load command ... not
# page-aligned").
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends binutils >/dev/null
# The runtime dependencies only (pyproject.toml's, and the dask extra that the what-if
# service and the chart's study workers run; no plotting, Kubernetes client or test
# tools), in a layer that the code does not touch. image/wheels holds the wheels
# `make image` downloaded, with constraints.txt pinning them to the host's versions:
# installed offline (a bind mount: the wheels never become a layer). Empty
# (plain docker or skaffold): from PyPI.
COPY pyproject.toml /tmp/pyproject.toml
RUN --mount=type=bind,source=image/wheels,target=/tmp/wheels \
    python -c 'import tomllib; p = tomllib.load(open("/tmp/pyproject.toml", "rb"))["project"]; print(*p["dependencies"], *p["optional-dependencies"]["dask"], sep="\n")' \
        > /tmp/requirements.txt \
    && if [ -f /tmp/wheels/constraints.txt ]; then \
        pip install --no-index --find-links /tmp/wheels -c /tmp/wheels/constraints.txt \
            -r /tmp/requirements.txt; \
    else \
        pip install -r /tmp/requirements.txt; \
    fi \
    && if [ "$JAX_VARIANT" = "cuda" ]; then \
        pip install "jax[cuda12]==$(python -c 'import jax; print(jax.__version__)')"; \
    elif [ "$JAX_VARIANT" != "cpu" ]; then \
        echo "JAX_VARIANT must be cpu or cuda, not $JAX_VARIANT" >&2; exit 1; \
    fi \
    && site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && rm -rf "$site"/pandas/tests "$site"/pyarrow/tests "$site"/numpy/*/tests \
        "$site"/scipy/*/tests "$site"/scipy/*/*/tests "$site"/pyarrow/include \
        "$site"/dask/*/tests "$site"/distributed/tests "$site"/distributed/*/tests \
        "$site"/pyarrow/*flight* "$site"/pyarrow/*s3* "$site"/pyarrow/_pyarrow_cpp_tests* \
    && find "$site"/jaxlib "$site"/pyarrow -maxdepth 1 -type f \
        \( -name '*.so' -o -name '*.so.[0-9]*' \) -exec strip --strip-unneeded {} + \
    && pip uninstall --quiet --yes pip setuptools
# Above: the CUDA plugins match the installed jax exactly (from PyPI: not among the
# wheels); the test suites inside the dependencies, pyarrow's headers, Flight and S3
# (nothing here uses them, no other pyarrow library links them) and the installers are
# dropped.
# The code is not installed into the venv (that would tie this layer to every code
# change): a .pth puts /app and the generated protobuf import root on the path, where
# `skaffold dev` syncs edited files, and `twin` is the console script pip would write.
RUN site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && printf '/app\n/app/proto/gen/python\n' > "$site/ai-factory-twin.pth" \
    && printf '#!/opt/venv/bin/python\nfrom services.cli.main import main\nmain()\n' \
        > /opt/venv/bin/twin \
    && chmod 755 /opt/venv/bin/twin

FROM ${PYTHON_IMAGE}
ARG JAX_VARIANT=cpu
LABEL org.opencontainers.image.title="ai-factory-twin" \
      org.opencontainers.image.description="AI Factory Twin services and CLI" \
      org.opencontainers.image.licenses="Apache-2.0" \
      ai-factory-twin.jax-variant="${JAX_VARIANT}"
# /tmp is the only writable path in the chart (readOnlyRootFilesystem): every cache goes
# there. Bytecode is compiled at build time and never written at run time.
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
# The code last: a code change rebuilds only these small layers.
WORKDIR /app
COPY scenarios ./scenarios
COPY proto/gen/python ./proto/gen/python
COPY twin_core ./twin_core
COPY services ./services
RUN python -m compileall -q /app/twin_core /app/services /app/proto/gen/python \
    && twin --help > /dev/null
USER 10001:10001
# gRPC API, and the plaintext grpc.health.v1 port for kubelet probes.
EXPOSE 50051 8081
ENTRYPOINT ["twin", "serve"]
CMD ["twin"]
