"""The chat bot: Telegram and Discord adapters over one platform-neutral core."""
