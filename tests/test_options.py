"""The model options have environment equivalents ($HASHTAG_MODEL, ...), read when a command
builds its parser, and checked like the flags."""

import argparse

import pytest

from bot.cli import build_parser as bot_parser
from bot.operations.learning import child_environment
from inference.options import add_model_arguments, check_model_arguments


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="test")
    add_model_arguments(parser)
    return parser


def set_environment(monkeypatch, settings: dict[str, str]) -> None:
    for name, value in settings.items():
        monkeypatch.setenv(name, value)


ZERO_SHOT = {
    "HASHTAG_MODEL": "ViT-B-16",
    "HASHTAG_PRETRAINED": "weights.safetensors",
    "HASHTAG_VOCAB": "tags.txt",
    "HASHTAG_DEVICE": "cpu",
    "HASHTAG_BACKEND": "onnx",
    "HASHTAG_INT8": "1",
}
ZERO_SHOT_FLAGS = [
    *("--model", "ViT-B-16", "--pretrained", "weights.safetensors", "--vocab", "tags.txt"),
    *("--device", "cpu", "--backend", "onnx", "--int8"),
]
CHECKPOINT = {"HASHTAG_CHECKPOINT": "learned-model", "HASHTAG_DEVICE": "cuda:1"}
CHECKPOINT_FLAGS = ["--checkpoint", "learned-model", "--device", "cuda:1"]


@pytest.mark.parametrize(
    ("environment", "flags"), [(ZERO_SHOT, ZERO_SHOT_FLAGS), (CHECKPOINT, CHECKPOINT_FLAGS)]
)
def test_the_environment_gives_the_same_options_as_the_flags(monkeypatch, environment, flags):
    from_flags = parser().parse_args(flags)
    assert from_flags != parser().parse_args([])  # the flags do change something
    set_environment(monkeypatch, environment)
    from_environment = parser().parse_args([])
    assert from_environment == from_flags
    check_model_arguments(parser(), from_environment)  # a valid combination stays valid


def test_the_bot_reads_its_model_from_the_environment(monkeypatch):
    set_environment(monkeypatch, CHECKPOINT)
    args = bot_parser().parse_args([])
    assert (str(args.checkpoint), args.device) == ("learned-model", "cuda:1")


def test_a_flag_wins_over_the_environment(monkeypatch):
    set_environment(monkeypatch, ZERO_SHOT)
    assert parser().parse_args(["--device", "cuda"]).device == "cuda"


def test_an_empty_variable_counts_as_unset(monkeypatch):
    set_environment(monkeypatch, {"HASHTAG_CHECKPOINT": "", "HASHTAG_INT8": ""})
    args = parser().parse_args([])
    assert args.checkpoint is None and args.int8 is False


def test_each_model_option_names_its_variable_in_its_help():
    for action in parser()._actions:
        if action.option_strings == ["-h", "--help"]:
            continue
        (flag,) = action.option_strings
        assert f"$HASHTAG_{flag[2:].upper()}" in action.help


@pytest.mark.parametrize(
    ("environment", "complaint"),
    [
        ({"HASHTAG_CHECKPOINT": "ckpt", "HASHTAG_MODEL": "ViT-B-16"}, "$HASHTAG_CHECKPOINT"),
        ({"HASHTAG_MODEL": "ViT-B-16"}, "needs --pretrained"),
        ({"HASHTAG_BACKEND": "gpu"}, "$HASHTAG_BACKEND"),
        ({"HASHTAG_INT8": "maybe"}, "$HASHTAG_INT8"),
    ],
)
def test_contradictory_or_bad_variables_are_usage_errors(
    monkeypatch, capsys, environment, complaint
):
    set_environment(monkeypatch, environment)
    command = parser()
    with pytest.raises(SystemExit) as stopped:
        check_model_arguments(command, command.parse_args([]))
    assert stopped.value.code == 2 and complaint in capsys.readouterr().err


def test_a_learning_round_takes_its_model_from_its_flags_not_the_bots_variables(monkeypatch):
    # The round is given `--checkpoint` (the head served now); the bot's $HASHTAG_MODEL beside
    # it would make that a contradiction.
    set_environment(monkeypatch, {**ZERO_SHOT, **CHECKPOINT})
    environment = child_environment("bot.sqlite3")
    assert not [name for name in environment if name in {**ZERO_SHOT, **CHECKPOINT}]
    assert environment["HASHTAG_DB"] == "bot.sqlite3"


def test_the_profile_cache_budget_is_a_flag_and_a_variable(monkeypatch, capsys):
    from bot.options import parse

    monkeypatch.setenv("HASHTAG_PROFILE_CACHE_MB", "64")
    assert parse(["--console"])[1].profile_cache_mb == 64
    assert parse(["--console", "--profile-cache-mb", "0"])[1].profile_cache_mb == 0
    for bad in ("-1", "nan", "inf"):
        with pytest.raises(SystemExit) as stopped:
            parse(["--console", "--profile-cache-mb", bad])
        assert stopped.value.code == 2 and "--profile-cache-mb" in capsys.readouterr().err
