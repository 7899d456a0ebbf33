# The hashtag bot. GPU hosts: `docker run --gpus all ...`; CPU-only hosts work unchanged.
# PyPI's Linux torch wheel is the CUDA build, which falls back to the CPU when no GPU is present.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY inference ./inference
COPY finetune ./finetune
COPY migrations ./migrations
# The same `pip install .` that CI runs (see .ci/run).
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim
COPY --from=build /opt/venv /opt/venv
RUN useradd --create-home --uid 10001 bot && mkdir /data && chown bot:bot /data
# One volume for everything that must outlive the container: the database, the cached
# weights and hashtag heads, and any fine-tuned checkpoints mounted under /data.
# 0.0.0.0: inside a container, 127.0.0.1 is unreachable even through `docker run -p`.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HASHTAG_DB=/data/hashtag-bot.sqlite3 \
    HASHTAG_CACHE_DIR=/data/cache \
    HF_HOME=/data/cache/huggingface \
    METRICS_PORT=9100 \
    METRICS_HOST=0.0.0.0 \
    TELEGRAM_WEBHOOK_LISTEN=0.0.0.0
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# 9100: /healthz and /metrics; 8443: Telegram's webhook, with --telegram-webhook-url only.
EXPOSE 9100 8443
# Healthy = model loaded, database writable, chat platforms connected (GET /healthz).
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python", "-m", "bot.operations.healthcheck"]
# Tokens come only from the environment: -e TELEGRAM_BOT_TOKEN=... -e DISCORD_BOT_TOKEN=...
ENTRYPOINT ["python", "-m", "bot"]
