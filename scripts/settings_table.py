"""Print the README's table of settings, made from the settings classes and the YAMLs.

    python -m scripts.settings_table

A row per environment variable: its default (what the service's YAML gives with
nothing set), the services that read it, and what it is for (the field's
``doc``). tests/unit/test_settings_files.py fails until the README's
"Configuration" section holds the table exactly as printed, and until every
YAML sets each of its service's settings from its variable, with the settings
class's default.
"""

import importlib
import os
import re

import yaml

from shared.services import SERVICES
from shared.settings import declared_settings, sources

# ${VAR:default} as nameko reads it (nameko.cli.main.ENV_VAR_MATCHER, without the regex module)
PLACEHOLDER = re.compile(r"\$\{([^}:\s]+):?([^}]+)?\}")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = "| variable | default | read by | what |\n|---|---|---|---|"


def settings_class(service):
    """The settings class that ``service``'s nameko class names."""
    module = importlib.import_module(service.module)
    for value in vars(module).values():
        if isinstance(value, type) and getattr(value, "name", None) == service.name:
            found = declared_settings(value)
            if found is not None:
                return found
    raise LookupError(f"{service.module} has no service {service.name!r} with a SettingsProvider")


def raw_config(service):
    """The service's YAML as written: each placeholder left as its text."""
    with open(os.path.join(ROOT, service.config)) as file:
        # BaseLoader: nameko's parser, once set up, would resolve placeholders in safe_load
        return yaml.load(file, Loader=yaml.BaseLoader)  # noqa: S506 (BaseLoader builds no objects)


def placeholders(service):
    """``{variable: [default as written, ...]}``, one entry per ``${VAR:default}`` in the YAML."""
    with open(os.path.join(ROOT, service.config)) as file:
        lines = [line for line in file if not line.lstrip().startswith("#")]
    found = {}
    for variable, default in PLACEHOLDER.findall("".join(lines)):
        found.setdefault(variable, []).append(default)
    return found


def rows():
    """``(variable, {service: default}, doc)`` of every setting, in the classes' order."""
    by_field = {}
    for service in SERVICES:
        defaults = placeholders(service)
        for item, source in sources(settings_class(service)):
            variable = source.env_var(service.name)
            per_service = by_field.setdefault(item.name, {})
            _, service_defaults, _ = per_service.setdefault(variable, (variable, {}, source.doc))
            service_defaults[service.name] = defaults[variable][0]
    return [row for per_service in by_field.values() for row in per_service.values()]


def _default(value):
    return f"`{value}`" if value else "empty"


def row_text(variable, defaults, doc):
    if len(set(defaults.values())) == 1:
        default = _default(next(iter(defaults.values())))
    else:
        default = ", ".join(f"{_default(value)} {name}" for name, value in defaults.items())
    names = [s.name for s in SERVICES if s.name in defaults]
    read_by = "every service" if len(names) == len(SERVICES) else ", ".join(names)
    return f"| `{variable}` | {default} | {read_by} | {doc} |"


def table():
    return "\n".join([HEADER, *(row_text(*row) for row in rows())])


if __name__ == "__main__":
    print(table())
