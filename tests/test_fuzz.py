"""Property-based tests (hypothesis) of what users type and write: ``--set`` values, config files
and benchmark files. Whatever the input, reading and checking it either gives a config (or
benchmark) or raises the project's own error (ConfigError / DataError), whose message is one
line; never another exception."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pearl_cl.config import config_keys, load_config, validate
from pearl_cl.data.benchmarks import benchmark_spec
from pearl_cl.errors import PearlError

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True),
                    st.text(max_size=20))
yaml_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)
keys = st.sampled_from(sorted(config_keys()))


def _one_line_error(call) -> None:
    """Run ``call``; it may succeed or raise a PearlError with a one-line message."""
    try:
        call()
    except PearlError as exc:
        assert "\n" not in str(exc), str(exc)


@FUZZ
@given(key=st.one_of(keys, st.text(max_size=30)), raw=st.text(max_size=40))
def test_any_set_value_is_a_config_or_a_config_error(key, raw):
    _one_line_error(lambda: validate(load_config(overrides=[f"{key}={raw}"])))


@FUZZ
@given(key=keys, value=yaml_values)
def test_any_typed_set_value_is_a_config_or_a_config_error(key, value):
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
    _one_line_error(lambda: validate(load_config(overrides=[f"{key}={text}"])))


@FUZZ
@given(document=st.one_of(st.dictionaries(st.sampled_from(sorted({k.split(".")[0] for k in config_keys()}))
                                          | st.text(max_size=8),
                                          st.dictionaries(st.sampled_from(sorted({k.split(".")[-1] for k in config_keys()})),
                                                          yaml_values, max_size=4) | yaml_values, max_size=4),
                          yaml_values))
def test_any_config_file_is_a_config_or_a_config_error(document, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    _one_line_error(lambda: validate(load_config(path)))


@FUZZ
@given(data=st.binary(max_size=200))
def test_any_bytes_as_a_config_file_are_a_config_error_at_worst(data, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(data)
    _one_line_error(lambda: validate(load_config(path)))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A small image folder: classes a, b, c of 8×8 grey PNGs in train/ and test/."""
    root = tmp_path_factory.mktemp("fuzz") / "images"
    for split in ("train", "test"):
        for k, name in enumerate("abc"):
            (root / split / name).mkdir(parents=True)
            Image.fromarray(np.full((8, 8), 80 * k, dtype=np.uint8)).save(root / split / name / "0.png")
    return root


benchmark_values = st.one_of(yaml_values, st.lists(st.lists(st.one_of(st.integers(-3, 12), st.sampled_from("abcz")),
                                                            max_size=3), max_size=4))


@FUZZ
@given(document=st.dictionaries(st.sampled_from(["dataset", "tasks", "image_folder", "classes_per_task", "image_size",
                                                 "extra"]),
                                st.one_of(benchmark_values, st.sampled_from(["mnist", "cifar10", "images", "nowhere"])),
                                max_size=5))
def test_any_benchmark_file_is_a_benchmark_or_a_clear_error(document, folder):
    path = folder.parent / "bench.yaml"
    path.write_text(yaml.safe_dump(document))
    _one_line_error(lambda: benchmark_spec(str(path)))
