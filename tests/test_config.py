"""Settings from the environment: typed settings decoded, every other one kept as written."""

from __future__ import annotations

from dms.config import build_config


def test_numbers_and_booleans_are_decoded_only_for_typed_settings(tmp_path):
    config = build_config(
        {
            "DMS_VAR_DIR": str(tmp_path),
            "DMS_MAX_UPLOAD_BYTES": "1000",
            "DMS_INPROCESS_WORKER": "false",
            "DMS_SWEEP_INTERVAL_SECONDS": "0.5",
            "MAIL_USE_TLS": "true",
            "MAIL_PASSWORD": "12345678",
            "MAIL_USERNAME": "true",
            "DMS_ADMIN_PASSWORD": "[1, 2]",
            "DMS_CORS_ORIGINS": "https://a.example,https://b.example",
        }
    )
    assert config["DMS_MAX_UPLOAD_BYTES"] == 1000
    assert config["DMS_INPROCESS_WORKER"] is False
    assert config["DMS_SWEEP_INTERVAL_SECONDS"] == 0.5
    assert config["MAIL_USE_TLS"] is True
    assert config["MAIL_PASSWORD"] == "12345678"  # a password, not the number 12345678
    assert config["MAIL_USERNAME"] == "true"
    assert config["DMS_ADMIN_PASSWORD"] == "[1, 2]"
    assert config["DMS_CORS_ORIGINS"] == "https://a.example,https://b.example"


def test_a_typed_setting_that_is_not_json_is_kept_as_written(tmp_path):
    config = build_config({"DMS_VAR_DIR": str(tmp_path), "MAIL_PORT": "twenty-five"})
    assert config["MAIL_PORT"] == "twenty-five"
