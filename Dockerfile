# toposched: multi-stage, slim, non-root. Build: docker build -t toposched:0.1.0 .
# The image runs `toposched` (serve --mode scheduler | extender, discover, place, simulate, ...).
# The node agent's image adds the `agent` extra (NVML bindings and torch for --measure):
#   docker build --build-arg EXTRAS=agent -t toposched-agent:0.1.0 .

FROM python:3.11-slim AS build
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY models ./models
COPY scheduler ./scheduler
COPY plugins ./plugins
COPY simulations ./simulations
# wheels for the package and every dependency, so the runtime stage needs no compiler or cache
RUN pip wheel --wheel-dir /wheels ".${EXTRAS:+[$EXTRAS]}"

FROM python:3.11-slim
ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels "toposched${EXTRAS:+[$EXTRAS]}" \
    && groupadd --gid 65532 toposched \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin toposched
USER 65532:65532
WORKDIR /tmp
EXPOSE 10261
ENTRYPOINT ["toposched"]
CMD ["serve", "--mode=scheduler", "--config=/etc/toposched/config.yaml"]
