"""Thin adapters from chat platforms to the core: Telegram, Discord and the terminal console.

They turn platform events into HashtagService calls and its answers into messages
(`messages` holds the words shown to people); no hashtag logic lives here.
"""
