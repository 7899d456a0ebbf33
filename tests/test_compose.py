"""compose.yaml stays consistent with the bot: no Docker engine runs here, so this checks what
can be checked without one (valid settings, every Discord shard run exactly once)."""

from pathlib import Path

import yaml

from bot.cli import build_parser

COMPOSE = Path(__file__).resolve().parents[1] / "compose.yaml"


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
