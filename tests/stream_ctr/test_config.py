import pytest

from stream_ctr.config import ConfigError, Settings


@pytest.mark.parametrize("env,key", [
    ({"STREAM_CTR_BATCH_SIZE": "0"}, "STREAM_CTR_BATCH_SIZE"),
    ({"STREAM_CTR_HEAD_LR": "fast"}, "STREAM_CTR_HEAD_LR"),
    ({"STREAM_CTR_MODEL_FAMILY": "gbdt"}, "STREAM_CTR_MODEL_FAMILY"),
    ({"STREAM_CTR_HIDDEN": "64,x"}, "STREAM_CTR_HIDDEN"),
    ({"STREAM_CTR_FEATURES": "age:blob"}, "STREAM_CTR_FEATURES"),
    ({"KAFKA_BOOTSTRAP": "localhost"}, "KAFKA_BOOTSTRAP"),
    ({"STREAM_CTR_CTR_WINDOW": "100000"}, "STREAM_CTR_CTR_WINDOW"),
])
def test_bad_config_fails_naming_the_key(env, key):
    with pytest.raises(ConfigError, match=key):
        Settings.from_env(env)


def test_env_and_overrides():
    s = Settings.from_env({"STREAM_CTR_BATCH_SIZE": "32", "KAFKA_BOOTSTRAP": "127.0.0.1:9092"}, head_steps=3)
    assert (s.batch_size, s.kafka_bootstrap, s.head_steps) == (32, "127.0.0.1:9092", 3)
    assert s.topic("ctr.events") == "ctr.events"
    assert "STREAM_CTR_HEAD_L2" in Settings.describe()


def test_cli_reports_config_errors_without_traceback(capsys, monkeypatch):
    from stream_ctr.cli import main

    monkeypatch.setenv("STREAM_CTR_BATCH_SIZE", "-3")
    assert main(["replay", "--limit", "1"]) == 2
    assert "STREAM_CTR_BATCH_SIZE" in capsys.readouterr().err
