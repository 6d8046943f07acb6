"""Numbers in the settings are read the way people write them, in params.yaml and on the command line."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml

from mstcli.config import SECTIONS, load_params
from mstcli.errors import UserError

SPELLINGS = [("1e-3", 1e-3), ("1E-4", 1e-4), ("2.5e+1", 25.0), (".5", 0.5), ("5.", 5.0), ("1_0.5", 10.5), ("3", 3.0)]


def float_settings() -> list[str]:
    """Every float setting (plain float fields; the lists of floats are covered by one case below)."""
    names = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        names += [f"{section}.{f.name}" for f in dataclasses.fields(cls) if hints[f.name] is float]
    return names


def value_of(params, dotted: str):
    section, key = dotted.split(".")
    return getattr(getattr(params, section), key)


@pytest.mark.parametrize("setting", float_settings())
def test_every_float_setting_takes_exponent_spellings_on_the_command_line(setting):
    assert len(float_settings()) >= 10  # the list is read off the settings classes, not empty by a typo
    section, key = setting.split(".")
    meta = next(f.metadata for f in dataclasses.fields(SECTIONS[section]) if f.name == key)
    number = max(0.5, meta.get("min") or 0.0)  # inside every float setting's range
    params = load_params(overrides=[f"{setting}={round(number * 10)}e-1"])  # e.g. 5e-1, a string to YAML 1.1
    assert value_of(params, setting) == pytest.approx(number)
    assert isinstance(value_of(params, setting), float)


@pytest.mark.parametrize("text, number", SPELLINGS)
def test_python_float_spellings_in_params_yaml(tmp_path, text, number):
    path = tmp_path / "params.yaml"
    path.write_text(f"train:\n  lr: {text}\ndistill:\n  w_kl: {text}\nprepare:\n  snr_db: [{text}, 40]\n")
    assert isinstance(yaml.safe_load(path.read_text())["train"]["lr"], (str, int, float))
    params = load_params(path)
    assert params.train.lr == pytest.approx(number)
    assert params.distill.w_kl == pytest.approx(number)
    assert params.prepare.snr_db[0] == pytest.approx(number)


@pytest.mark.parametrize(
    "text, message",
    [
        ("abc", "must be a number"),
        ("nan", "must be a finite number"),
        ("-inf", "must be a finite number"),
        ("true", "must be a number"),
    ],
)
def test_what_is_not_a_number_is_still_refused(text, message):
    with pytest.raises(UserError, match=rf"train\.lr {message}"):
        load_params(overrides=[f"train.lr={text}"])


def test_the_range_still_applies_to_a_spelled_number():
    with pytest.raises(UserError, match=r"train\.temperature must be in"):
        load_params(overrides=["train.temperature=1e-5"])
