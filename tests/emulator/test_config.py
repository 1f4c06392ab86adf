"""Settings through pydantic-settings: every variable name and default the README's table gives."""

from __future__ import annotations

import re

import pytest

from aep_emulator.config import PROJECT_ROOT, Settings, default_settings, get_settings

# Variables the stack reads itself (aep_local.stack.StackEnvironment), not the emulator.
STACK_ONLY = {"AEP_PG_PORT", "AEP_S3_PORT", "AEP_PROPENSITY_BUCKET"}
# Fields read from another variable than AEP_<FIELD>.
RENAMED = {"home": "AEP_LOCAL_HOME", "host": "AEP_EMULATOR_HOST", "port": "AEP_EMULATOR_PORT"}


def _readme_table() -> dict[str, str]:
    readme = (PROJECT_ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration") :]
    rows = {}
    for names, default in re.findall(r"^\| (`AEP_[^|]+) \| ([^|]+) \|", table, re.MULTILINE):
        for name in re.findall(r"`(AEP_\w+)`", names):
            rows[name] = default
    return rows


def _variable(field: str) -> str:
    return RENAMED.get(field, f"AEP_{field.upper()}")


def test_every_setting_is_in_the_readme_table():
    documented = set(_readme_table())
    assert {_variable(field) for field in Settings.model_fields} | STACK_ONLY == documented


@pytest.mark.parametrize("field", sorted(set(Settings.model_fields) - {"home", "admin_token", "sandboxes"}))
def test_readme_defaults_are_the_code_defaults(field):
    default = getattr(default_settings(), field)
    shown = _readme_table()[_variable(field)]
    expected = str(default).lower() if isinstance(default, bool) else str(default)
    assert f"`{expected}`" in shown, (field, shown)


def test_variables_are_read_by_their_names(monkeypatch):
    monkeypatch.setenv("AEP_EMULATOR_PORT", "9999")
    monkeypatch.setenv("AEP_LOCAL_HOME", "/tmp/somewhere")
    monkeypatch.setenv("AEP_SANDBOXES", " prod , dev,qa ")
    monkeypatch.setenv("AEP_THROTTLE", "false")
    monkeypatch.setenv("AEP_STATE_LATENCY_S", "0.5")
    settings = get_settings()
    assert (settings.port, str(settings.home), settings.sandboxes) == (9999, "/tmp/somewhere", ("prod", "dev", "qa"))
    assert settings.throttle is False and settings.state_latency_s == 0.5
    assert default_settings().port == 8765, "defaults ignore the environment"


def test_a_bad_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("AEP_QS_PORT", "not-a-port")
    with pytest.raises(ValueError, match="qs_port"):
        get_settings()


def test_settings_are_immutable():
    with pytest.raises(ValueError):
        get_settings().port = 1
