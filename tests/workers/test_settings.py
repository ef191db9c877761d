"""Settings profiles, masking, and the CLI's one-line errors (exit status 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cberl_model.artifact import DEFAULT_MODEL_DIR
from deploy.services import RedisServer, TansuBroker, free_port
from tests.cberl_model.model_dirs import copy_model
from tests.cberl_model.test_artifact import MALFORMED_CONFIGS
from tests.workers.harness import ROOT
from workers.settings import WorkerSettings


def test_tansu_profile_applies_the_local_broker_quirks() -> None:
    conf = WorkerSettings(broker_profile="tansu").faust_settings()
    assert conf["producer_max_batch_size"] == 1
    assert conf["broker_session_timeout"] == 6 and conf["broker_heartbeat_interval"] == 1
    assert WorkerSettings(broker_profile="tansu").effective_fetch_max_wait_ms == 20
    kafka = WorkerSettings(broker_profile="kafka")
    assert "producer_max_batch_size" not in kafka.faust_settings()
    assert kafka.effective_fetch_max_wait_ms == 500
    assert WorkerSettings(broker_profile="kafka", fetch_max_wait_ms=7).effective_fetch_max_wait_ms == 7


def test_env_prefix_and_masking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CBERL_REDIS_URL", "redis://user:s3cret@10.0.0.1:6380/2")
    monkeypatch.setenv("CBERL_MAX_BATCH", "5")
    settings = WorkerSettings()
    assert settings.max_batch == 5
    masked = settings.masked()
    assert masked["redis_url"] == "redis://user:***@10.0.0.1:6380/2"
    assert "s3cret" not in str(masked)


def test_one_broker_variable_configures_streamer_and_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamer.settings import StreamerSettings

    monkeypatch.setenv("CBERL_BROKER_BOOTSTRAP_SERVERS", "kafka-0:9092,kafka-1:9093")
    assert StreamerSettings().broker_bootstrap_servers == "kafka-0:9092,kafka-1:9093"
    worker = WorkerSettings()
    assert worker.broker_bootstrap_servers == "kafka-0:9092,kafka-1:9093"
    assert worker.faust_settings()["broker"] == "kafka://kafka-0:9092;kafka://kafka-1:9093"
    for bad in ("kafka://kafka-0:9092", "kafka-0", "a:1, b:2"):
        with pytest.raises(ValueError, match="broker_bootstrap_servers"):
            WorkerSettings(broker_bootstrap_servers=bad)


def test_topic_names_must_differ() -> None:
    with pytest.raises(ValueError, match="topic names must differ"):
        WorkerSettings(emotions_topic="utterances")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "workers", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=120)


@pytest.mark.parametrize(("args", "message"), [
    (("--max-batch", "0"), "error: invalid setting max_batch: Input should be greater than or equal to 1"),
    (("--broker-bootstrap-servers", "127.0.0.1:{port}"), "error: broker 127.0.0.1:{port} unreachable"),
])
def test_cli_user_errors_are_one_line_exit_2(args: tuple[str, ...], message: str) -> None:
    port = str(free_port())
    result = run_cli(*(a.format(port=port) for a in args))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(message.format(port=port)), result.stderr
    assert "Traceback" not in result.stderr


def test_cli_bad_model_dir(tansu_broker: TansuBroker, redis_server: RedisServer, tmp_path: Path) -> None:
    result = run_cli("--broker-bootstrap-servers", tansu_broker.bootstrap_servers,
                     "--redis-url", redis_server.url,
                     "--model-dir", f"{tmp_path}/no-model", "--utterances-topic", "cli-u",
                     "--emotions-topic", "cli-e", "--dead-letter-topic", "cli-d")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot load the model from")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("damage", ["labels-not-a-list", "feature-spec-a-list", "encoder-a-string",
                                    "encoder-without-model", "input-dims-a-string"])
def test_cli_malformed_model_config(tansu_broker: TansuBroker, redis_server: RedisServer,
                                    tmp_path: Path, damage: str) -> None:
    """Each damaged config.json: one ``error:`` line and exit 2 (once a traceback, exit 1)."""
    model = copy_model(DEFAULT_MODEL_DIR, tmp_path / "m", MALFORMED_CONFIGS[damage])
    result = run_cli("--broker-bootstrap-servers", tansu_broker.bootstrap_servers,
                     "--redis-url", redis_server.url, "--model-dir", str(model),
                     "--utterances-topic", "cli-u", "--emotions-topic", "cli-e",
                     "--dead-letter-topic", "cli-d")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot load the model from")
    assert "Traceback" not in result.stderr
