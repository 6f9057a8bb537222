"""The config file and which server a command talks to."""

from __future__ import annotations

import stat

import click
import pytest

from sagemesh_cli.config import DEFAULT_URL, ConfigFile, Login
from sagemesh_cli.context import Options
from sagemesh_cli.errors import CliError, ExitCode
from sagemesh_cli.transports import Target

FLAG, ENV, UNSET = 0, 1, 3


def test_the_config_file_keeps_the_login_readable_by_its_owner_alone(tmp_path):
    path = tmp_path / "sagemesh" / "config.toml"
    config = ConfigFile(path, url="http://gateway:8080")
    config.login = Login("ann@example.com", "access", "refresh", 1234.5)
    config.save()

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = ConfigFile.load(path)
    assert (again.url, again.grpc, again.login) == ("http://gateway:8080", None, config.login)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_a_broken_config_file_is_one_clear_error(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("url = ")
    with pytest.raises(CliError) as raised:
        ConfigFile.load(path)
    assert raised.value.exit_code == ExitCode.USAGE and str(path) in raised.value.message


def options(url=None, url_level=UNSET, grpc=None, grpc_level=UNSET) -> Options:
    return Options(url, grpc, None, None, url_level, grpc_level)


@pytest.mark.parametrize(("given", "file", "expected"), [
    (options(), ConfigFile(None), (Target("rest", DEFAULT_URL), False)),
    (options(), ConfigFile(None, url="http://kept"), (Target("rest", "http://kept"), False)),
    (options(), ConfigFile(None, url="http://kept", grpc="kept:50051"), (Target("grpc", "kept:50051"), False)),
    # The environment beats the file, a flag beats the environment, whichever transport each names.
    (options(url="http://env", url_level=ENV), ConfigFile(None, grpc="kept:50051"),
     (Target("rest", "http://env"), False)),
    (options(url="http://flag", url_level=FLAG, grpc="env:50051", grpc_level=ENV), ConfigFile(None),
     (Target("rest", "http://flag"), True)),
    (options(url="http://env", url_level=ENV, grpc="flag:50051", grpc_level=FLAG), ConfigFile(None),
     (Target("grpc", "flag:50051"), True)),
])
def test_flags_beat_the_environment_which_beats_the_config_file(given, file, expected):
    assert given.target(file) == expected


def test_a_url_and_a_grpc_address_at_the_same_level_are_a_usage_error():
    with pytest.raises(CliError) as raised:
        options(url="http://a", url_level=FLAG, grpc="b:1", grpc_level=FLAG).target(ConfigFile(None))
    assert raised.value.exit_code == ExitCode.USAGE


def test_levels_come_from_where_click_found_the_value(monkeypatch):
    monkeypatch.setenv("T_GRPC", "env:50051")

    @click.command()
    @click.option("--url", envvar="T_URL")
    @click.option("--grpc", envvar="T_GRPC")
    @click.pass_context
    def probe(ctx, url, grpc):
        ctx.obj = Options.from_context(ctx, url, grpc, None, None)

    context = probe.make_context("probe", ["--url", "http://flag"])
    with context:
        probe.invoke(context)
    assert (context.obj.url_level, context.obj.grpc_level) == (FLAG, ENV)
