"""compose.yaml and the Dockerfile stay consistent with the bot: no Docker engine runs here, so
this checks what can be checked without one (valid settings, every Discord shard run exactly
once, the image's defaults)."""

import shlex
from pathlib import Path

import yaml

from bot.cli import build_parser

COMPOSE = Path(__file__).resolve().parents[1] / "compose.yaml"
DOCKERFILE = COMPOSE.with_name("Dockerfile")


def image_environment() -> dict[str, str]:
    """The ENV settings of the Dockerfile's last stage (the image that runs), `KEY=VALUE` form."""
    logical = DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
    last_stage = max(i for i, line in enumerate(logical) if line.upper().startswith("FROM "))
    environment = {}
    for line in logical[last_stage:]:
        if line.upper().startswith("ENV "):
            environment.update(item.split("=", 1) for item in shlex.split(line[4:]))
    return environment


def test_the_bots_split_every_shard_once_with_valid_settings(monkeypatch):
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    bots = {name: service for name, service in services.items() if name.startswith("bot")}
    assert len(bots) >= 2
    shards, counts = [], set()
    for service in bots.values():
        environment = {key: str(value) for key, value in service["environment"].items()}
        assert environment["HASHTAG_DB"].startswith("postgresql://")
        for key, value in environment.items():
            monkeypatch.setenv(key, value)
        args = build_parser().parse_args([])  # the image's entry point reads these
        shards += args.discord_shards
        counts.add(args.discord_shard_count)
    assert len(counts) == 1 and sorted(shards) == list(range(counts.pop()))
    telegram = [
        name for name, service in bots.items() if "TELEGRAM_BOT_TOKEN" in service["environment"]
    ]
    assert len(telegram) == 1  # Telegram delivers a bot's updates to one receiver


def test_the_image_serves_metrics_and_health_beyond_the_container(monkeypatch):
    """`docker run -p 127.0.0.1:9100:9100` reaches /metrics only if the bot inside listens on
    every interface, not on the container's own loopback."""
    environment = image_environment()
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    args = build_parser().parse_args([])
    assert (args.metrics_host, args.metrics_port) == ("0.0.0.0", 9100)
    assert environment["TELEGRAM_WEBHOOK_LISTEN"] == "0.0.0.0"  # and the parsing found ENV
