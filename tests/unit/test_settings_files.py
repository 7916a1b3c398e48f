"""Every YAML and the README hold the settings as the settings classes declare them.

What an operator reads (a YAML's ``${VAR:default}``, the README's table) and what
the code does cannot drift apart: a setting added to a class and forgotten in a
YAML or the README fails here, as does a default changed in one place only.
"""

import os
from dataclasses import MISSING

import pytest
import yaml
from nameko.cli.main import setup_yaml_parser

from scripts.settings_table import (
    PLACEHOLDER,
    ROOT,
    placeholders,
    raw_config,
    settings_class,
    table,
)
from shared.services import SERVICES
from shared.settings import load_settings, sources

NAMEKO_ONLY = {"LOGGING"}  # read by nameko alone: how it sets up logging


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_the_yaml_sets_each_of_its_services_settings_from_its_variable(service):
    raw = raw_config(service)
    for _, source in sources(settings_class(service)):
        name = source.name(service.name)
        value = source.raw(raw, service.name)
        assert value is not MISSING, f"{service.config} does not set {name}"
        placeholder = PLACEHOLDER.fullmatch(value)
        assert placeholder, f"{service.config}: {name} is not a ${{VAR:default}} placeholder"
        assert placeholder.group(1) == source.env_var(service.name), name


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_the_yaml_holds_nothing_its_service_does_not_read(service):
    read = {source.path(service.name)[0] for _, source in sources(settings_class(service))}
    assert set(raw_config(service)) - NAMEKO_ONLY <= read


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_with_nothing_set_the_yaml_gives_the_settings_defaults(service, monkeypatch):
    for variable in placeholders(service):
        monkeypatch.delenv(variable, raising=False)
    setup_yaml_parser()  # the placeholders resolved as `nameko run` resolves them
    with open(os.path.join(ROOT, service.config)) as file:
        config = yaml.safe_load(file)
    cls = settings_class(service)
    settings = load_settings(cls, config, service.name)
    for item, source in sources(cls):
        if item.default is not MISSING:
            assert getattr(settings, item.name) == item.default, source.env_var(service.name)
    assert settings.web_server_address == f"0.0.0.0:{service.port}"  # shared/services.py's


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_a_variable_has_one_default_wherever_its_yaml_names_it(service):
    for variable, defaults in placeholders(service).items():
        assert len(set(defaults)) == 1, f"{service.config}: {variable} defaults to {defaults}"


def test_the_readme_lists_every_setting_with_its_default_as_the_code_has_it():
    with open(os.path.join(ROOT, "README.md")) as file:
        readme = file.read()
    assert table() in readme, (
        "the README's settings table is not the code's: run `python -m scripts.settings_table` "
        "and paste its output into the README's Configuration section"
    )


def test_no_setting_says_what_it_is_with_a_character_that_breaks_the_table():
    for service in SERVICES:
        for _, source in sources(settings_class(service)):
            assert "|" not in source.doc and "\n" not in source.doc
