"""Configuration from the environment (and an optional .env file), all as `MLC_*` variables.

Secrets (BC client secret, Twilio API key secret and auth token) are not settings: they are stored
encrypted in the database (see the credentials commands). Settings hold only where things are and
how the service behaves.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLC_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{REPO_ROOT / 'var' / 'ml-connector.sqlite3'}",
        description="SQLAlchemy URL; SQLite file by default, postgresql+psycopg://... for production.",
    )
    rules_dir: Path = Field(default=REPO_ROOT / "rules", description="Folder of rule files (*.yaml).")
    templates_dir: Path = Field(default=REPO_ROOT / "templates", description="Folder of message templates.")
    default_region: str = Field(
        default="GB", description="Region for phone numbers written without +country (ISO 3166 alpha-2)."
    )
    log_level: str = Field(default="INFO")


def load_settings() -> Settings:
    return Settings()
