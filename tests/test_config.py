"""Configuration: TOML plus DISTBOT_<SECTION>__<KEY> overrides; unknown keys and bad values stop
start-up with a sentence naming the key; live mode refuses usable-by-anyone secrets."""

from __future__ import annotations

import base64
import json
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

from domain.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent

REPO = Path(__file__).resolve().parent.parent
GOOD_KEY = base64.b64encode(bytes(range(32))).decode().rstrip("=")


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text, encoding="utf-8")
    return p


def error(path: Path | None = None, **overrides: object) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path, **overrides)
    message = str(err.value)
    assert "\n" not in message.strip() and "Traceback" not in message
    return message


def test_the_shipped_config_loads_in_sandbox_mode() -> None:
    config = load_config(REPO / "config.toml")
    assert config.sandbox and config.distribution.max_levels == 2
    assert [r.key for r in config.ranks] == ["junior", "gold", "diamond"]


def test_toml_values_are_read(tmp_path: Path) -> None:
    p = write(tmp_path, """
[server]
port = 9001
[wechat]
token = "from-toml"
app_id = "wxfromtoml"
[distribution]
max_levels = 3
[[ranks]]
key = "only"
name = "唯一"
rates = [0.29, 0.05, 0.01]
""")
    c = load_config(p)
    assert (c.server.port, c.wechat.token, c.wechat.app_id, c.distribution.max_levels) == (9001, "from-toml",
                                                                                          "wxfromtoml", 3)
    assert c.ranks[0].rates == (Decimal("0.29"), Decimal("0.05"), Decimal("0.01"))


def test_env_overrides_toml_key_by_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path, '[wechat]\ntoken = "from-toml"\napp_id = "wxfromtoml"\n[server]\nport = 9001\n')
    monkeypatch.setenv("DISTBOT_WECHAT__TOKEN", "from-env")
    monkeypatch.setenv("DISTBOT_SERVER__PORT", "9100")
    c = load_config(p)
    assert c.wechat.token == "from-env"
    assert c.wechat.app_id == "wxfromtoml"  # the rest of the section still comes from the file
    assert c.server.port == 9100


def test_env_lists_and_tables_are_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ranks = [{"key": "a", "name": "甲", "rates": [0.2]}, {"key": "b", "name": "乙", "rates": [0.3, 0.1],
                                                          "min_team_size": 5}]
    monkeypatch.setenv("DISTBOT_RANKS", json.dumps(ranks, ensure_ascii=False))
    c = load_config(write(tmp_path, ""))
    assert [r.key for r in c.ranks] == ["a", "b"]
    assert c.ranks[1].rates == (Decimal("0.3"), Decimal("0.1")) and c.ranks[1].min_team_size == 5


def test_distbot_config_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTBOT_CONFIG", str(write(tmp_path, "[server]\nport = 9222\n")))
    assert load_config().server.port == 9222


def test_without_any_file_the_defaults_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    c = load_config()
    assert c.sandbox and c.server.port == 8080


@pytest.mark.parametrize("toml,key", [
    ("[server]\nprot = 1\n", "server.prot"),
    ("[wechat]\ntokne = 'x'\n", "wechat.tokne"),
    ("[nonsense]\na = 1\n", "nonsense"),
    ("[[ranks]]\nkey = 'a'\nname = 'A'\nrates = [0.1]\nbonus = 1\n", "bonus"),
])
def test_an_unknown_key_is_named(tmp_path: Path, toml: str, key: str) -> None:
    message = error(write(tmp_path, toml))
    assert key in message and "not a known setting" in message


def test_an_unknown_key_from_the_environment_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTBOT_WECHAT__TOKNE", "x")
    assert "tokne" in error(write(tmp_path, "")).lower()


@pytest.mark.parametrize("toml,key", [
    ("[server]\nport = 'eighty'\n", "server.port"),
    ("[server]\nport = 70000\n", "server.port"),
    ("[server]\npublic_url = 'ftp://x'\n", "server.public_url"),
    ("[database]\nurl = 'mysql://x'\n", "database.url"),
    ("[wechat]\nmode = 'prod'\n", "wechat.mode"),
    ("[wechat]\ntoken = ''\n", "wechat.token"),
    ("[distribution]\nfreeze_days = -1\n", "distribution.freeze_days"),
    ("[[ranks]]\nkey = 'a'\nname = 'A'\nrates = [1.5]\n", "rates"),
    ("[[ranks]]\nkey = 'a'\nname = 'A'\nrates = [0.1, 0.1, 0.1, 0.1]\n", "rates"),
])
def test_a_bad_value_is_named(tmp_path: Path, toml: str, key: str) -> None:
    assert key in error(write(tmp_path, toml))


def test_a_bad_value_from_the_environment_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTBOT_SERVER__PORT", "eighty")
    assert "server.port" in error(write(tmp_path, ""))


@pytest.mark.parametrize("levels", [4, 10])
def test_more_than_three_levels_is_refused(tmp_path: Path, levels: int) -> None:
    message = error(write(tmp_path, f"[distribution]\nmax_levels = {levels}\n"))
    assert "distribution.max_levels" in message and "3" in message


def test_zero_levels_is_refused(tmp_path: Path) -> None:
    assert "distribution.max_levels" in error(write(tmp_path, "[distribution]\nmax_levels = 0\n"))


LIVE_WECHAT = {"mode": "live", "app_id": "wx0123456789abcdef", "app_secret": "a-real-secret",
               "token": "a-real-webhook-token", "encoding_aes_key": GOOD_KEY}


def live(**wechat: str | None) -> str:
    """A [wechat] section for live mode with real-looking values, some replaced or (None) left out."""
    values = {k: v for k, v in {**LIVE_WECHAT, **wechat}.items() if v is not None}
    return "[wechat]\n" + "".join(f'{k} = "{v}"\n' for k, v in values.items())


LIVE = live()


@pytest.mark.parametrize("admin", ['token = "change-me"', 'token = ""', ""], ids=["default", "empty", "unset"])
def test_live_mode_refuses_a_guessable_admin_token(tmp_path: Path, admin: str) -> None:
    assert "admin.token" in error(write(tmp_path, LIVE + f"[admin]\n{admin}\n"))


def test_live_mode_refuses_the_demo_configs_scoped_tokens(tmp_path: Path) -> None:
    demo = tomllib.loads((ROOT / "config.toml").read_text(encoding="utf-8"))["admin"]["tokens"]
    assert demo and all(t["token"].startswith("demo-") for t in demo)  # the demo has some, all refused live
    tokens = "".join(f'[[admin.tokens]]\nname = "{t["name"]}"\ntoken = "{t["token"]}"\nscopes = {json.dumps(t["scopes"])}\n'
                     for t in demo)
    message = error(write(tmp_path, LIVE + '[admin]\ntoken = "s3cret-admin"\n' + tokens))
    assert "admin.tokens" in message and repr(demo[0]["name"]) in message


# (key, value): the sandbox's value written out, or None: left out, so the default applies.
SANDBOX_DEFAULTS = [("token", "sandbox-token"), ("app_secret", "sandbox-secret"), ("app_secret", ""),
                    ("app_id", "wxsandbox0000000000"), ("encoding_aes_key", ""),
                    ("token", None), ("app_secret", None), ("app_id", None), ("encoding_aes_key", None)]


@pytest.mark.parametrize("key,value", SANDBOX_DEFAULTS,
                         ids=[f"{k}={'unset' if v is None else v or 'empty'}" for k, v in SANDBOX_DEFAULTS])
def test_live_mode_refuses_each_sandbox_default_naming_its_key(tmp_path: Path, key: str, value: str | None) -> None:
    message = error(write(tmp_path, live(**{key: value}) + '[admin]\ntoken = "s3cret-admin"\n'))
    assert f"wechat.{key}: live mode" in message and message.count("live mode") == 1, message


def test_live_mode_names_every_default_at_once(tmp_path: Path) -> None:
    """The sandbox's own config.toml switched to live: one line naming each key to change."""
    message = error(REPO / "config.toml", wechat={"mode": "live"})
    for key in ("admin.token", "admin.tokens", "wechat.app_id", "wechat.app_secret", "wechat.token",
                "wechat.encoding_aes_key"):
        assert f"{key}: live mode" in message, (key, message)


def test_a_sandbox_token_from_the_environment_is_refused_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.setenv("DISTBOT_WECHAT__TOKEN", "sandbox-token")
    assert "wechat.token" in error(write(tmp_path, LIVE + '[admin]\ntoken = "s3cret-admin"\n'))


def test_live_mode_with_real_secrets_starts(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, LIVE + '[admin]\ntoken = "s3cret-admin"\n'))
    assert not c.sandbox and c.api_base_url == "https://api.weixin.qq.com/cgi-bin/"


@pytest.mark.parametrize("key", ["short", GOOD_KEY + "A", "!" * 43, GOOD_KEY[:42] + "é"],
                         ids=["short", "44-chars", "not-base64", "non-ascii"])
def test_an_encoding_aes_key_must_be_43_base64_characters(tmp_path: Path, key: str) -> None:
    assert "wechat.encoding_aes_key" in error(write(tmp_path, f'[wechat]\nencoding_aes_key = "{key}"\n'))


def test_a_good_encoding_aes_key_means_safe_mode(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, f'[wechat]\nencoding_aes_key = "{GOOD_KEY}"\n'))
    assert c.wechat.safe_mode
    assert not load_config(write(tmp_path, "")).wechat.safe_mode


def test_a_missing_config_file_is_one_sentence(tmp_path: Path) -> None:
    message = error(tmp_path / "nope.toml")
    assert "nope.toml" in message and "does not exist" in message


def test_a_missing_file_named_by_distbot_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTBOT_CONFIG", str(tmp_path / "gone.toml"))
    assert "gone.toml" in error()


def test_broken_toml_is_one_sentence(tmp_path: Path) -> None:
    assert "not valid TOML" in error(write(tmp_path, "[server\nport = 1\n"))


def test_duplicate_rank_keys_are_refused(tmp_path: Path) -> None:
    toml = "[[ranks]]\nkey='a'\nname='A'\nrates=[0.1]\n[[ranks]]\nkey='a'\nname='B'\nrates=[0.2]\n"
    assert "ranks" in error(write(tmp_path, toml))


def test_the_sandbox_api_base_url_follows_the_server(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, '[server]\nhost = "0.0.0.0"\nport = 8181\n'))
    assert c.api_base_url == "http://127.0.0.1:8181/sandbox/cgi-bin/"
    c = load_config(write(tmp_path, '[wechat]\napi_base_url = "http://wx.example/cgi-bin"\n'))
    assert c.api_base_url == "http://wx.example/cgi-bin/"


def test_the_config_is_frozen(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, ""))
    with pytest.raises(Exception):
        c.server.port = 1  # type: ignore[misc]
