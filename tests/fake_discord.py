"""A fake Discord (REST + gateway) on 127.0.0.1 for end-to-end tests of the real discord.Client.

The gateway says HELLO, takes IDENTIFY, answers READY and a GUILD_CREATE per guild of the
identifying shard, acknowledges heartbeats, and then dispatches whatever events the test sends,
each to the shard that owns its guild as Discord does ((guild_id >> 22) % shard count; direct
messages to shard 0). REST serves the calls the bot
makes and records each one. Attachments are served from the same server.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

TOKEN = "fake-discord-token.for-tests.only"
MESSAGE_CONTENT = 1 << 15  # the privileged intent --discord-channels asks for
APP_ID = BOT_ID = 4_000_001
GUILD_ID, CHANNEL_ID = 4_000_100, 4_000_200
BOT = {"id": str(BOT_ID), "username": "hashtags", "discriminator": "0", "avatar": None,
       "global_name": "Hashtags", "bot": True}  # fmt: skip


def user(user_id: int) -> dict:
    return {"id": str(user_id), "username": f"user{user_id}", "discriminator": "0",
            "avatar": None, "global_name": f"User {user_id}"}  # fmt: skip


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


@dataclass
class Call:
    method: str
    path: str
    body: dict | list | None
    query: dict
    result: object = None


@dataclass
class FakeDiscord:
    calls: list[Call] = field(default_factory=list)
    attachments: dict[str, bytes] = field(default_factory=dict)
    heartbeats: int = 0
    heartbeat_interval_ms: int = 250
    failures: list[tuple[str, str, int, dict]] = field(default_factory=list)
    guilds: dict[int, int] = field(default_factory=lambda: {GUILD_ID: CHANNEL_ID})  # -> channel
    identified: list[tuple[int, int]] = field(default_factory=list)  # (shard, shard count)
    privileged_intents: bool = True  # False: the developer portal has Message Content off
    # user id -> their client's language, sent as an interaction's `locale` as Discord does
    languages: dict[int, str] = field(default_factory=dict)

    def __post_init__(self):
        self._ids = itertools.count(5_000_000)
        self._sequence = itertools.count(1)
        self._sockets: dict[web.WebSocketResponse, tuple[int, int]] = {}  # -> (shard, count)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.base = self.api_url = self.gateway_url = ""
        self.ready = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{name}", self._attachment)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.api_url = f"{self.base}/api/v10"
        self.gateway_url = f"ws://127.0.0.1:{port}/gateway"

    async def stop(self) -> None:
        for socket in self._sockets:
            await socket.close()
        if self._runner:
            await self._runner.cleanup()

    # --- what tests send ---------------------------------------------------------------------

    def attachment(
        self, data: bytes, content_type="image/jpeg", size=None, name="photo.jpg"
    ) -> dict:
        attachment_id = str(next(self._ids))
        self.attachments[attachment_id] = data
        return {
            "id": attachment_id,
            "filename": name,
            "size": len(data) if size is None else size,
            "url": f"{self.base}/attachments/{attachment_id}",
            "proxy_url": f"{self.base}/attachments/{attachment_id}",
            "content_type": content_type,
        }

    def message(self, author_id: int, *, guild: bool | int = False, **content) -> dict:
        """A message in a DM, or in the channel of `guild` (True: the default guild)."""
        guild_id = GUILD_ID if guild is True else guild
        channel_id = self.guilds[guild_id] if guild_id else self.dm_channel(author_id)
        message = self._message(str(channel_id), user(author_id), **content)
        if guild_id:
            message["guild_id"] = str(guild_id)
            message["member"] = _member()
        return message

    @staticmethod
    def dm_channel(user_id: int) -> int:
        return 7_000_000 + user_id

    async def send_message(self, message: dict) -> dict:
        await self.dispatch("MESSAGE_CREATE", message)
        return message

    async def react(self, user_id: int, message: dict, emoji: str, added: bool = True) -> None:
        event = {
            "user_id": str(user_id),
            "channel_id": message["channel_id"],
            "message_id": message["id"],
            "emoji": {"id": None, "name": emoji},
            "burst": False,
            "type": 0,
        }
        if "guild_id" in message:
            event["guild_id"] = message["guild_id"]
            event["member"] = {**_member(), "user": user(user_id)}
        await self.dispatch("MESSAGE_REACTION_ADD" if added else "MESSAGE_REACTION_REMOVE", event)

    async def interact(
        self, user_id: int, kind: int, data: dict, *, message=None, guild=False
    ) -> str:
        """Dispatch an INTERACTION_CREATE; returns the interaction's id."""
        interaction_id = str(next(self._ids))
        channel_id = CHANNEL_ID if guild else self.dm_channel(user_id)
        interaction = {
            "id": interaction_id,
            "application_id": str(APP_ID),
            "type": kind,
            "data": data,
            "channel_id": str(channel_id),
            "channel": {"id": str(channel_id), "type": 0 if guild else 1},
            "token": f"interaction-token-{interaction_id}",
            "version": 1,
            "attachment_size_limit": 10 * 1024 * 1024,
            "app_permissions": "0",
            "locale": self.languages.get(user_id, "en-US"),
            "entitlements": [],
            "authorizing_integration_owners": {},
            "context": 0 if guild else 1,
        }
        if guild:
            interaction["guild_id"] = str(GUILD_ID)
            interaction["member"] = {**_member(), "user": user(user_id), "permissions": "0"}
        else:
            interaction["user"] = user(user_id)
        if message is not None:
            interaction["message"] = message
        await self.dispatch("INTERACTION_CREATE", interaction)
        return interaction_id

    async def slash(
        self, user_id: int, name: str, attachment: dict | None = None, value: str | None = None
    ) -> str:
        """A slash command; `value`: its text argument (/count, /hide, /language...)."""
        data = {"id": "1", "name": name, "type": 1}
        if value is not None:
            data["options"] = [{"name": "value", "type": 3, "value": value}]
        if attachment:
            data["options"] = [{"name": "image", "type": 11, "value": attachment["id"]}]
            data["resolved"] = {"attachments": {attachment["id"]: attachment}}
        return await self.interact(user_id, 2, data)

    async def press(self, user_id: int, message: dict, custom_id: str) -> str:
        data = {"custom_id": custom_id, "component_type": 2}
        return await self.interact(user_id, 3, data, message=message, guild="guild_id" in message)

    async def dispatch(self, event: str, data: dict) -> None:
        await self.ready.wait()
        payload = {"op": 0, "t": event, "s": next(self._sequence), "d": data}
        guild_id = int(data.get("guild_id") or 0)
        for socket, (shard, count) in list(self._sockets.items()):
            if not socket.closed and shard_of(guild_id, count) == shard:
                await socket.send_str(json.dumps(payload))

    # --- what tests check --------------------------------------------------------------------

    def calls_to(self, method: str, path_part: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and path_part in c.path]

    async def wait_for(self, method: str, path_part: str, count: int = 1, timeout=30) -> list[Call]:
        async def enough():
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.calls_to(method, path_part)) >= count)

        await asyncio.wait_for(enough(), timeout)
        return self.calls_to(method, path_part)

    # --- the gateway ---------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        hello = {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}}
        await socket.send_str(json.dumps(hello))
        async for frame in socket:
            if frame.type != WSMsgType.TEXT:
                continue
            payload = json.loads(frame.data)
            if payload["op"] == 1:  # heartbeat
                self.heartbeats += 1
                await socket.send_str(json.dumps({"op": 11}))
            elif payload["op"] == 2:  # identify
                if payload["d"]["intents"] & MESSAGE_CONTENT and not self.privileged_intents:
                    await socket.close(code=4014, message=b"Disallowed intent(s).")
                    break
                shard, count = payload["d"].get("shard") or (0, 1)
                self._sockets[socket] = (shard, count)
                self.identified.append((shard, count))
                mine = [g for g in self.guilds if shard_of(g, count) == shard]
                await self._send(socket, "READY", self._ready(shard, count, mine))
                for guild_id in mine:
                    await self._send(
                        socket, "GUILD_CREATE", _guild(guild_id, self.guilds[guild_id])
                    )
                self.ready.set()
        self._sockets.pop(socket, None)  # the client went away (closed, or restarting)
        return socket

    async def _send(self, socket, event: str, data: dict) -> None:
        payload = {"op": 0, "t": event, "s": next(self._sequence), "d": data}
        await socket.send_str(json.dumps(payload))

    def _ready(self, shard: int, count: int, guilds: list[int]) -> dict:
        return {
            "v": 10,
            "user": BOT,
            "guilds": [{"id": str(guild_id), "unavailable": True} for guild_id in guilds],
            "session_id": f"fake-session-{shard}",
            "shard": [shard, count],
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(APP_ID), "flags": 0},
        }

    # --- REST ----------------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.Response:
        # Interaction callbacks and follow-ups carry their token in the URL, like on Discord.
        token_in_url = request.match_info["path"].startswith(("interactions/", "webhooks/"))
        if not token_in_url and request.headers.get("Authorization") != f"Bot {TOKEN}":
            return _json({"message": "401: Unauthorized", "code": 0}, 401)
        body = None
        if request.can_read_body:
            raw = await request.read()
            if request.content_type == "application/json" and raw:
                body = json.loads(raw)
        call = Call(request.method, "/" + request.match_info["path"], body, dict(request.query))
        status, call.result = self._planned_failure(call) or _too_long(body) or self._answer(call)
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()
        if status == 204:
            return web.Response(status=204)
        return _json(call.result, status)

    def fail_next(self, method: str, path_part: str, status: int, **body) -> None:
        """Answer the next matching REST call with an error (e.g. a 429 with retry_after)."""
        self.failures.append((method, path_part, status, body))

    def _planned_failure(self, call: Call) -> tuple[int, object] | None:
        for i, (method, path_part, status, body) in enumerate(self.failures):
            if call.method == method and path_part in call.path:
                del self.failures[i]
                return status, body
        return None

    def _answer(self, call: Call) -> tuple[int, object]:
        method, path, body = call.method, call.path, call.body or {}
        if path == "/users/@me":
            return 200, BOT
        if path == "/oauth2/applications/@me":
            return 200, {
                "id": str(APP_ID), "name": "hashtags", "icon": None, "description": "",
                "rpc_origins": [], "bot_public": True, "bot_require_code_grant": False,
                "owner": user(1), "summary": "", "verify_key": "00", "flags": 0, "team": None,
                "interactions_endpoint_url": None,
            }  # fmt: skip
        if path in ("/gateway", "/gateway/bot"):
            limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
            return 200, {"url": self.gateway_url, "shards": 1, "session_start_limit": limit}
        if path.endswith("/commands") and method == "PUT":
            return 200, [
                {
                    "description": "",
                    **command,
                    "id": str(next(self._ids)),
                    "application_id": str(APP_ID),
                    "version": "1",
                }
                for command in body
            ]
        if path.startswith("/channels/") and path.endswith("/messages") and method == "POST":
            return 200, self._bot_message(path.split("/")[2], body)
        if "/reactions/" in path:
            return 204, None
        if path.startswith("/interactions/") and path.endswith("/callback"):
            if call.query.get("with_response") in ("1", "true", "True"):
                interaction_id = path.split("/")[2]
                return 200, {
                    "interaction": {
                        "id": interaction_id,
                        "type": 2,
                        "activity_instance_id": None,
                        "response_message_id": None,
                        "response_message_loading": False,
                        "response_message_ephemeral": False,
                    },
                    "resource": {"type": body.get("type", 4)},
                }
            return 204, None
        if path.startswith("/webhooks/"):
            channel = str(CHANNEL_ID)
            return 200, self._bot_message(channel, body if isinstance(body, dict) else {})
        return 404, {"message": "404: Not Found (fake)", "code": 10000}

    def _bot_message(self, channel_id: str, body: dict) -> dict:
        return self._message(
            channel_id,
            BOT,
            content=body.get("content") or "",
            components=body.get("components") or [],
            flags=body.get("flags", 0),
        )

    def _message(self, channel_id: str, author: dict, **fields) -> dict:
        """A Discord message object with every field discord.py reads."""
        return {
            "id": str(next(self._ids)),
            "channel_id": channel_id,
            "author": author,
            "content": "",
            "timestamp": _now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            **fields,
        }

    async def _attachment(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        async with self._changed:
            self.calls.append(Call("GET", f"/attachments/{name}", None, {}))
            self._changed.notify_all()
        if name not in self.attachments:
            return web.Response(status=404)
        return web.Response(body=self.attachments[name], content_type="application/octet-stream")


def _member() -> dict:
    return {"roles": [], "joined_at": _now(), "deaf": False, "mute": False, "flags": 0}


def shard_of(guild_id: int, shard_count: int) -> int:
    """Discord's rule for which shard receives a guild's events; 0 for direct messages."""
    return (guild_id >> 22) % shard_count


def _guild(guild_id: int = GUILD_ID, channel_id: int = CHANNEL_ID) -> dict:
    return {
        "id": str(guild_id),
        "name": "Test guild",
        "icon": None,
        "owner_id": "1",
        "roles": [
            {
                "id": str(guild_id),
                "name": "@everyone",
                "permissions": "0",
                "position": 0,
                "color": 0,
                "hoist": False,
                "managed": False,
                "mentionable": False,
            }
        ],
        "emojis": [],
        "features": [],
        "channels": [
            {
                "id": str(channel_id),
                "type": 0,
                "name": "photos",
                "position": 0,
                "permission_overwrites": [],
            }
        ],
        "members": [{**_member(), "user": BOT}],
        "member_count": 2,
        "large": False,
        "unavailable": False,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "premium_tier": 0,
        "preferred_locale": "en-US",
        "nsfw_level": 0,
        "system_channel_flags": 0,
        "stickers": [],
        "threads": [],
        "voice_states": [],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "joined_at": _now(),
    }


def _json(data, status: int = 200) -> web.Response:
    # discord.py insists on exactly this content type, and only trusts a 429 that came
    # through Discord's proxy (a `Via` header), as every real API response does.
    body = json.dumps(data).encode()
    headers = {"Content-Type": "application/json", "Via": "1.1 google"}
    return web.Response(body=body, status=status, headers=headers)


MESSAGE_LIMIT = 2000  # characters of content in one message


def _too_long(body: object) -> tuple[int, object] | None:
    """Discord refuses content over its limit, in a message or an interaction response."""
    if not isinstance(body, dict):
        return None
    data = body.get("data")
    content = body.get("content") or (data.get("content") if isinstance(data, dict) else "")
    if len(content or "") <= MESSAGE_LIMIT:
        return None
    errors = {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "too long"}]}}
    return 400, {"message": "Invalid Form Body", "code": 50035, "errors": errors}
