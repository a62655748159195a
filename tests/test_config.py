import pytest
from pydantic import ValidationError

from pipeline.config import RunConfig, dump_config, load_config


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("limit: 10\ngeneration:\n  languages: [zh]\n")
    config = load_config(
        path, ["models.temperature=0.2", "generation.languages=[en, zh]", "corpus.path=null"]
    )
    assert config.limit == 10
    assert config.models.temperature == 0.2
    assert config.generation.languages == {"en": 1.0, "zh": 1.0}  # a list means equal weights
    assert config.personas.top_k == 5


def test_typo_is_an_error():
    with pytest.raises(ValidationError):
        load_config(None, ["models.temprature=0.2"])
    with pytest.raises(ValueError, match="key=value"):
        load_config(None, ["limit"])


def test_snapshot_round_trips(tmp_path):
    config = load_config(None, ["seed=7", "generation.query_length_words={5: 1.0}"])
    dump_config(config, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == config and isinstance(again, RunConfig)
