import pytest

from stream_ctr.config import ConfigError, Settings


@pytest.mark.parametrize(
    "env,key",
    [
        ({"STREAM_CTR_BATCH_SIZE": "0"}, "STREAM_CTR_BATCH_SIZE"),
        ({"STREAM_CTR_HEAD_LR": "fast"}, "STREAM_CTR_HEAD_LR"),
        ({"STREAM_CTR_MODEL_FAMILY": "gbdt"}, "STREAM_CTR_MODEL_FAMILY"),
        ({"STREAM_CTR_HIDDEN": "64,x"}, "STREAM_CTR_HIDDEN"),
        ({"STREAM_CTR_FEATURES": "age:blob"}, "STREAM_CTR_FEATURES"),
        ({"KAFKA_BOOTSTRAP": "localhost"}, "KAFKA_BOOTSTRAP"),
        ({"STREAM_CTR_CTR_WINDOW": "100000"}, "STREAM_CTR_CTR_WINDOW"),
        ({"STREAM_CTR_WEB_PORT": "70000"}, "STREAM_CTR_WEB_PORT"),
        ({"STREAM_CTR_WEB_PORT": "0"}, "STREAM_CTR_WEB_PORT"),
        ({"STREAM_CTR_ATTRIBUTION_WINDOW_S": "-1"}, "STREAM_CTR_ATTRIBUTION_WINDOW_S"),
        ({"STREAM_CTR_WORKER_THREADS": "0"}, "STREAM_CTR_WORKER_THREADS"),
        ({"STREAM_CTR_REPLICATION_FACTOR": "0"}, "STREAM_CTR_REPLICATION_FACTOR"),
        ({"STREAM_CTR_TRAINER_OPTIMIZER": "sgd"}, "STREAM_CTR_TRAINER_OPTIMIZER"),
        ({"STREAM_CTR_STORE": "redis"}, "STREAM_CTR_STORE"),
        ({"STREAM_CTR_TRAINER_WORLD_SIZE": "0"}, "STREAM_CTR_TRAINER_WORLD_SIZE"),
        ({"STREAM_CTR_TRAINER_WORLD_SIZE": "9"}, "STREAM_CTR_TRAINER_WORLD_SIZE"),  # more ranks than 8 partitions
        ({"STREAM_CTR_TRAINER_RESTARTS": "-1"}, "STREAM_CTR_TRAINER_RESTARTS"),
    ],
)
def test_bad_config_fails_naming_the_key(env, key):
    with pytest.raises(ConfigError, match=key):
        Settings.from_env(env)


def test_env_and_overrides():
    s = Settings.from_env({"STREAM_CTR_BATCH_SIZE": "32", "KAFKA_BOOTSTRAP": "127.0.0.1:9092"}, head_steps=3)
    assert (s.batch_size, s.kafka_bootstrap, s.head_steps) == (32, "127.0.0.1:9092", 3)
    assert s.topic("ctr.events") == "ctr.events"
    text = s.describe()
    assert "STREAM_CTR_BATCH_SIZE            = 32  (default 1024)" in text  # the effective value, then the default
    assert "STREAM_CTR_HEAD_L2" in text


def test_cli_reports_config_errors_without_traceback(capsys, monkeypatch):
    from stream_ctr.cli import main

    monkeypatch.setenv("STREAM_CTR_BATCH_SIZE", "-3")
    assert main(["replay", "--limit", "1"]) == 2
    assert "STREAM_CTR_BATCH_SIZE" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["replay", "--limit", "-1"], "positive integer"),
        (["replay", "--rate", "-5"], "number >= 0"),
        (["replay", "--malformed-every", "x"], "integer >= 0"),
        (["simulate", "--requests", "0"], "positive integer"),
    ],
)
def test_out_of_range_arguments_are_refused(capsys, argv, needle):
    from stream_ctr.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and needle in capsys.readouterr().err


def test_a_bad_world_size_flag_is_refused_before_the_broker_is_asked(capsys, monkeypatch):
    from stream_ctr.cli import main
    from stream_ctr.process.net import free_port

    monkeypatch.setenv("KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")  # nothing listens there
    assert main(["trainer", "--world-size", "9"]) == 2
    err = capsys.readouterr().err
    assert "STREAM_CTR_TRAINER_WORLD_SIZE: 9 ranks for 8 partitions" in err and "cannot reach" not in err


def test_an_unreachable_broker_is_one_line_within_seconds(capsys, monkeypatch):
    import time

    from stream_ctr.cli import main
    from stream_ctr.process.net import free_port

    monkeypatch.setenv("KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")  # nothing listens there
    t0 = time.monotonic()
    assert main(["replay", "--limit", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert time.monotonic() - t0 < 10 and len(err.splitlines()) == 1 and "cannot reach Kafka at 127.0.0.1" in err


def test_every_knob_is_in_exactly_one_section_and_every_env_name_is_unique():
    import dataclasses

    from stream_ctr.config import SECTIONS

    names = [f.name for section in SECTIONS for f in dataclasses.fields(section)]
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(Settings)) and len(set(names)) == len(names)
    envs = [f.metadata["env"] for f in dataclasses.fields(Settings)]
    formers = [f.metadata["formerly"] for f in dataclasses.fields(Settings) if f.metadata["formerly"]]
    assert len(set(envs + formers)) == len(envs) + len(formers)
    assert Settings.section_of("delta_every").__name__ == "TrainerSettings"
    assert isinstance(Settings(), SECTIONS)  # a component may take the one section it reads


def test_a_renamed_variable_is_still_read_and_the_new_name_wins():
    assert Settings.from_env({"STREAM_CTR_SNAPSHOT_EVERY": "32"}).delta_every == 32
    both = {"STREAM_CTR_SNAPSHOT_EVERY": "32", "STREAM_CTR_DELTA_EVERY": "16"}
    assert Settings.from_env(both).delta_every == 16
    with pytest.raises(ConfigError, match="STREAM_CTR_SNAPSHOT_INTERVAL_S"):  # an error names what was set
        Settings.from_env({"STREAM_CTR_SNAPSHOT_INTERVAL_S": "soon"})


def test_the_configuration_document_holds_every_setting_as_generated():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "CONFIGURATION.md").read_text()
    assert Settings.markdown() in doc, "docs/CONFIGURATION.md is stale: paste `stream-ctr config --markdown`"


def test_a_settings_file_lies_under_the_environment_and_names_a_bad_line(tmp_path):
    from stream_ctr.config import read_config_file

    path = tmp_path / "stream-ctr.env"
    path.write_text("# batch\nSTREAM_CTR_BATCH_SIZE=64\nSTREAM_CTR_HEAD_LR = 0.5\n")
    s = Settings.from_env({"STREAM_CTR_CONFIG_FILE": str(path), "STREAM_CTR_HEAD_LR": "0.25"})
    assert (s.batch_size, s.head_lr) == (64, 0.25)  # the environment wins over the file
    path.write_text("STREAM_CTR_BATCH_SIZE=64\nSTREAM_CTR_BACH_SIZE=32\n")
    with pytest.raises(ConfigError, match=r"STREAM_CTR_CONFIG_FILE: .*stream-ctr.env:2: .*STREAM_CTR_BACH_SIZE"):
        read_config_file(str(path))
    with pytest.raises(ConfigError, match="STREAM_CTR_CONFIG_FILE: cannot read"):
        Settings.from_env({"STREAM_CTR_CONFIG_FILE": str(tmp_path / "missing.env")})
    path.write_text("STREAM_CTR_BATCH_SIZE=many\n")
    with pytest.raises(ConfigError, match="STREAM_CTR_BATCH_SIZE: expected int"):
        Settings.from_env({"STREAM_CTR_CONFIG_FILE": str(path)})
