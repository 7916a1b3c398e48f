"""The Prometheus config and alert rules, checked and unit-tested by promtool itself."""

import os
import shutil
import subprocess

import pytest

MONITORING = os.path.join(os.path.dirname(__file__), "..", "..", "monitoring")
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(
    PROMTOOL is None and not os.environ.get("CI"),
    reason="promtool is not installed (apt-get install prometheus; .ci/run installs it)",
)


def promtool(*args):
    result = subprocess.run(
        [PROMTOOL or "promtool", *args], cwd=MONITORING, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_scrape_config_is_valid():
    assert "SUCCESS" in promtool("check", "config", "--syntax-only", "prometheus.yml")


def test_the_alert_rules_are_valid():
    assert "SUCCESS: 7 rules found" in promtool("check", "rules", "alerts.yml")


def test_every_alert_fires_and_stays_quiet_as_its_test_cases_say():
    assert "SUCCESS" in promtool("test", "rules", "alerts.test.yml")


def test_every_alert_has_a_firing_and_a_quiet_case():
    import yaml

    rules = yaml.safe_load(open(os.path.join(MONITORING, "alerts.yml")))
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    cases = yaml.safe_load(open(os.path.join(MONITORING, "alerts.test.yml")))["tests"]
    firing, quiet = set(), set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert alerts == firing
    assert alerts == quiet
