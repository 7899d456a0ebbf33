"""A fake Telegram Bot API on 127.0.0.1 for end-to-end tests of the real PTB Application.

It serves the methods the bot uses, hands out updates the test feeds in through long-polled
`getUpdates`, serves files at /file/bot<token>/<path>, records every call, and can answer a
method with an error (a 429 with retry_after, a 502) to test retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field

from aiohttp import web

MESSAGE_LIMIT = 4096  # Telegram's, in UTF-16 code units
TOKEN = "123456789:AAFakeTokenForTests-do-not-log-me"
BOT_USER = {
    "id": 999_000,
    "is_bot": True,
    "first_name": "Hashtags",
    "username": "hashtag_test_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}


@dataclass
class Call:
    method: str
    params: dict
    result: object = None


@dataclass
class FakeBotAPI:
    calls: list[Call] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    chats: dict[int, dict] = field(default_factory=dict)
    failures: dict[str, list[tuple[int, dict]]] = field(default_factory=dict)
    delays: dict[str, list[float]] = field(default_factory=dict)
    # user id -> the language of their Telegram app, sent as `language_code` as Telegram does
    languages: dict[int, str] = field(default_factory=dict)

    def __post_init__(self):
        self._updates: list[dict] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(5000)
        self._file_ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    # --- what tests feed in ------------------------------------------------------------------

    def add_photo(
        self, data: bytes | dict[tuple[int, int], bytes], sizes=((90, 68), (320, 240), (1280, 960))
    ) -> list[dict]:
        """Register one photo in several sizes; returns its PhotoSizes.

        `data` is served for every size, or given per (width, height).
        """
        photo = []
        for width, height in sizes:
            file_id = f"photo-{next(self._file_ids)}-{width}x{height}"
            self.files[file_id] = data[width, height] if isinstance(data, dict) else data
            photo.append(
                {
                    "file_id": file_id,
                    "file_unique_id": file_id,
                    "width": width,
                    "height": height,
                    "file_size": len(data),
                }
            )
        return photo

    def add_document(self, data: bytes, mime_type: str, file_size: int | None = None) -> dict:
        file_id = f"doc-{next(self._file_ids)}"
        self.files[file_id] = data
        return {
            "file_id": file_id,
            "file_unique_id": file_id,
            "file_name": "upload.jpg",
            "mime_type": mime_type,
            "file_size": len(data) if file_size is None else file_size,
        }

    def message(
        self, user_id: int, chat_id: int | None = None, chat_type="private", **content
    ) -> dict:
        chat_id = chat_id or user_id
        chat = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat["first_name"] = f"user{user_id}"
        else:
            chat["title"] = "A group"
        self.chats[chat_id] = chat
        message = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": self.user(user_id),
            **content,
        }
        for key in ("text", "caption"):
            text = message.get(key)
            if text and text.startswith("/"):
                command = text.split()[0]
                entity = {"type": "bot_command", "offset": 0, "length": len(command)}
                message["entities" if key == "text" else "caption_entities"] = [entity]
        return message

    def user(self, user_id: int) -> dict:
        person = {"id": user_id, "is_bot": False, "first_name": f"user{user_id}"}
        if user_id in self.languages:
            person["language_code"] = self.languages[user_id]
        return person

    def new_update(self, **update) -> dict:
        """An update as Telegram numbers it, for a test to deliver itself (webhook mode)."""
        return {"update_id": next(self._update_ids), **update}

    async def send_update(self, **update) -> dict:
        """Queue an update for the bot's next getUpdates (polling mode)."""
        update = self.new_update(**update)
        async with self._changed:
            self._updates.append(update)
            self._changed.notify_all()
        return update

    async def send_message(self, message: dict) -> dict:
        await self.send_update(message=message)
        return message

    async def react(
        self, user_id: int, chat_id: int, message_id: int, old: list[str], new: list[str]
    ):
        def reactions(emojis):
            return [{"type": "emoji", "emoji": emoji} for emoji in emojis]

        await self.send_update(
            message_reaction={
                "chat": self.chats[chat_id],
                "message_id": message_id,
                "user": self.user(user_id),
                "date": int(time.time()),
                "old_reaction": reactions(old),
                "new_reaction": reactions(new),
            }
        )

    async def press(self, user_id: int, bot_message: dict, data: str) -> None:
        await self.send_update(
            callback_query={
                "id": str(next(self._update_ids)),
                "from": self.user(user_id),
                "chat_instance": "1",
                "message": bot_message,
                "data": data,
            }
        )

    def fail_next(self, method: str, status: int, **payload) -> None:
        self.failures.setdefault(method, []).append((status, payload))

    def delay_next(self, method: str, seconds: float) -> None:
        """Carry out the next call to `method` at once, but answer it only `seconds` later
        (a slow network: the client may give up on a request that went through)."""
        self.delays.setdefault(method, []).append(seconds)

    # --- what tests check --------------------------------------------------------------------

    def calls_to(self, method: str) -> list[dict]:
        return [call.params for call in self.calls if call.method == method]

    def forget_updates(self) -> None:
        """What a bot confirmed before a restart (a later offset) is not delivered again."""
        self._updates.clear()

    def result_of(self, params: dict) -> dict:
        """What the fake answered to a recorded call: e.g. the bot's sent message."""
        return next(call.result for call in self.calls if call.params is params)

    async def wait_for(self, method: str, count: int = 1, timeout: float = 30) -> list[dict]:
        """Wait until `method` has been called `count` times; returns those calls."""

        async def enough():
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.calls_to(method)) >= count)

        await asyncio.wait_for(enough(), timeout)
        return self.calls_to(method)

    # --- the API -----------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != TOKEN:
            return _error(401, "Unauthorized")
        method = request.match_info["method"]
        params = await _params(request)
        call = Call(method, params)
        if self.failures.get(method):
            status, payload = self.failures[method].pop(0)
            await self._record(call)
            return _error(status, payload.pop("description", "failure"), **payload)
        if len(str(params.get("text", "")).encode("utf-16-le")) // 2 > MESSAGE_LIMIT:
            await self._record(call)
            return _error(400, "Bad Request: message is too long")
        if problem := _breaks_a_limit(method, params):
            await self._record(call)
            return _error(400, f"Bad Request: {problem}")
        handler = getattr(self, f"_method_{method}", None)
        if handler is None:
            await self._record(call)
            return _error(404, "Not Found: method not supported by the fake")
        call.result = await handler(params)
        await self._record(call)
        if self.delays.get(method):
            await asyncio.sleep(self.delays[method].pop(0))
        return web.json_response({"ok": True, "result": call.result})

    async def _record(self, call: Call) -> None:
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    async def _method_getMe(self, params):
        return BOT_USER

    async def _method_deleteWebhook(self, params):
        return True

    async def _method_setWebhook(self, params):
        return True

    async def _method_setMyCommands(self, params):
        return True

    async def _method_getUpdates(self, params):
        offset = int(params.get("offset") or 0)
        timeout = min(float(params.get("timeout") or 0), 0.5)

        def pending():
            return [u for u in self._updates if u["update_id"] >= offset]

        async with self._changed:
            if not pending():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait_for(lambda: bool(pending())), timeout)
            return pending()

    async def _method_sendMessage(self, params):
        return self._bot_message(params, text=str(params["text"]))

    async def _method_editMessageText(self, params):
        return self._bot_message(params, text=str(params["text"]), message_id=params["message_id"])

    async def _method_editMessageReplyMarkup(self, params):
        return self._bot_message(params, text="", message_id=params["message_id"])

    async def _method_answerCallbackQuery(self, params):
        return True

    async def _method_setMessageReaction(self, params):
        return True

    async def _method_getFile(self, params):
        file_id = params["file_id"]
        if file_id not in self.files:
            raise web.HTTPBadRequest()
        return {
            "file_id": file_id,
            "file_unique_id": file_id,
            "file_size": len(self.files[file_id]),
            "file_path": f"files/{file_id}",
        }

    def _bot_message(self, params, text: str, message_id=None) -> dict:
        chat_id = int(params["chat_id"])
        message = {
            "message_id": int(message_id or next(self._message_ids)),
            "date": int(time.time()),
            "chat": self.chats.get(chat_id, {"id": chat_id, "type": "private"}),
            "from": BOT_USER,
            "text": text,
        }
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        return message

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != TOKEN:
            return _error(401, "Unauthorized")
        file_id = request.match_info["path"].removeprefix("files/")
        await self._record(Call("download", {"file_id": file_id}))
        if file_id not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[file_id])


async def _params(request: web.Request) -> dict:
    """PTB posts form fields whose non-string values are JSON-encoded (or a JSON body)."""
    if request.content_type == "application/json":
        return await request.json()
    form = await request.post() if request.can_read_body else request.query
    params = {}
    for key, value in form.items():
        try:
            params[key] = json.loads(value) if isinstance(value, str) else value
        except json.JSONDecodeError:
            params[key] = value
    return params


def _breaks_a_limit(method: str, params: dict) -> str | None:
    """What Telegram would refuse: a long press notice, and keyboards beyond its limits."""
    if method == "answerCallbackQuery" and len(str(params.get("text") or "")) > 200:
        return "MESSAGE_TOO_LONG"
    for row in (params.get("reply_markup") or {}).get("inline_keyboard", []):
        if len(row) > 8:
            return "too many buttons in a row"
        for button in row:
            if len(button.get("callback_data", "").encode()) > 64:
                return "BUTTON_DATA_INVALID"
            if "copy_text" in button and not 1 <= len(button["copy_text"]["text"]) <= 256:
                return "copy text must be 1 to 256 characters"
    return None


def _error(status: int, description: str, **parameters) -> web.Response:
    body = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=status)
