"""Every settings group in one class (services.kit.settings.all_settings()): what the tests
build settings with, so that one object starts any service."""

from __future__ import annotations

from services.kit.settings import all_settings

Settings = all_settings()
