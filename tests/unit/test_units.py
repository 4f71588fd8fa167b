"""The systemd units: the instance template is the single unit, changed only where an instance must differ."""

from __future__ import annotations

from pathlib import Path

UNITS = Path(__file__).resolve().parents[2] / "systemd"


def settings(path: Path) -> list[str]:
    """The unit's lines without comments and blank lines."""
    return [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_template_differs_from_the_single_unit_only_per_instance():
    """Config, user, logs directory, an environment file of its own: the hardening and the rest are the same."""
    expected = []
    for line in settings(UNITS / "bridged.service"):
        line = line.replace("/etc/bridged/bridged.yaml", "/etc/bridged/%i.yaml")
        line = line.replace("Description=bridged:", "Description=bridged %i:")
        if line in ("User=bridged", "Group=bridged", "LogsDirectory=bridged"):
            line += "-%i"  # LogsDirectory=bridged-%i: beside bridged.service's, never under it
        expected.append(line)
        if line == "EnvironmentFile=-/etc/default/bridged":
            expected.append("EnvironmentFile=-/etc/default/bridged-%i")
    assert settings(UNITS / "bridged@.service") == expected
