"""Tests of examples/example_flags.py, the flag checks that the example scripts share."""

import math
import pathlib

import pytest
from absl import app, flags

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def example_flags(load_test_module):
    return load_test_module("example_flags", REPO_ROOT / "examples" / "example_flags.py")


def _parse(flag_values, *arguments):
    flag_values(["program", *arguments])
    return flag_values


@pytest.fixture
def flag_values(example_flags):
    """Return new flags like a script's: a list, a float, an integer and two paths."""
    values = flags.FlagValues()
    flags.DEFINE_list("models", ["mmoe"], "Models.", flag_values=values)
    flags.DEFINE_list("correlations", ["0.5"], "Correlations.", flag_values=values)
    flags.DEFINE_float("learning_rate", 1e-3, "Learning rate.", flag_values=values)
    flags.DEFINE_integer("epochs", 20, "Epochs.", lower_bound=1, flag_values=values)
    flags.DEFINE_string("metrics_json", None, "Metrics file.", flag_values=values)
    flags.DEFINE_string("export_dir", None, "Export folder.", flag_values=values)
    example_flags.require_choices("models", ["mmoe", "omoe"], flag_values=values)
    example_flags.require_numbers("correlations", -1.0, 1.0, flag_values=values)
    example_flags.require_number("learning_rate", 0.0, include_low=False, flag_values=values)
    return values


def test_choices_reject_unknown_entry(flag_values):
    with pytest.raises(flags.IllegalFlagValueError) as error:
        _parse(flag_values, "--models=mmoe,xx")
    assert "--models entries must be one of mmoe, omoe. Received: 'xx'" in str(error.value)


def test_choices_reject_empty_list(flag_values):
    with pytest.raises(flags.IllegalFlagValueError, match="--models must list at least one of mmoe, omoe"):
        _parse(flag_values, "--models=")


def test_choices_accept_known_entries(flag_values):
    assert _parse(flag_values, "--models=omoe,mmoe").models == ["omoe", "mmoe"]


@pytest.mark.parametrize("value", ["high", "1.5", "nan", "-inf"])
def test_numbers_reject_entry(flag_values, value):
    with pytest.raises(flags.IllegalFlagValueError) as error:
        _parse(flag_values, f"--correlations=0.5,{value}")
    assert f"--correlations entries must each be a number in [-1, 1]. Received: '{value}'" in str(error.value)


def test_numbers_accept_bounds(flag_values):
    assert _parse(flag_values, "--correlations=-1,1.0").correlations == ["-1", "1.0"]


@pytest.mark.parametrize("value", ["0", "-0.1", "nan", "inf"])
def test_number_rejects_value(flag_values, value):
    with pytest.raises(flags.IllegalFlagValueError, match="--learning_rate must be a finite number > 0"):
        _parse(flag_values, f"--learning_rate={value}")


def test_number_rejects_assignment(flag_values):
    _parse(flag_values)
    with pytest.raises(flags.IllegalFlagValueError, match="--learning_rate must be a finite number > 0"):
        flag_values.learning_rate = math.nan


def test_number_interval_wording(example_flags):
    values = flags.FlagValues()
    flags.DEFINE_float("dropout", 0.1, "Dropout.", flag_values=values)
    example_flags.require_number("dropout", 0.0, 1.0, include_high=False, flag_values=values)
    with pytest.raises(flags.IllegalFlagValueError, match=r"--dropout must be a number in \[0, 1\)"):
        _parse(values, "--dropout=1")


def test_quick_mode_keeps_given_flag(example_flags, flag_values):
    _parse(flag_values, "--epochs=7")
    example_flags.apply_quick_mode({"epochs": 2, "models": ["omoe"]}, flag_values=flag_values)
    assert flag_values.epochs == 7
    assert flag_values.models == ["omoe"]


def test_quick_mode_value_is_validated(example_flags, flag_values):
    _parse(flag_values)
    with pytest.raises(flags.IllegalFlagValueError, match="--models entries must be one of"):
        example_flags.apply_quick_mode({"models": ["xx"]}, flag_values=flag_values)


def test_output_file_unset_passes(example_flags, flag_values):
    _parse(flag_values)
    example_flags.check_output_file("metrics_json", flag_values=flag_values)


def test_output_file_missing_folder(example_flags, flag_values, tmp_path):
    path = tmp_path / "missing" / "metrics.json"
    _parse(flag_values, f"--metrics_json={path}")
    with pytest.raises(app.UsageError) as error:
        example_flags.check_output_file("metrics_json", flag_values=flag_values)
    assert f"The folder of --metrics_json does not exist: {path.parent}." in str(error.value)
    assert f"Received: --metrics_json={path}" in str(error.value)


def test_output_file_wrong_suffix(example_flags, flag_values, tmp_path):
    _parse(flag_values, f"--metrics_json={tmp_path / 'model'}")
    with pytest.raises(app.UsageError, match="--metrics_json must name a file ending in .keras"):
        example_flags.check_output_file("metrics_json", suffix=".keras", flag_values=flag_values)


def test_output_file_is_folder(example_flags, flag_values, tmp_path):
    _parse(flag_values, f"--metrics_json={tmp_path}")
    with pytest.raises(app.UsageError, match="--metrics_json must name a file, but .* is a folder"):
        example_flags.check_output_file("metrics_json", flag_values=flag_values)


def test_output_file_exists(example_flags, flag_values, tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("{}")
    _parse(flag_values, f"--metrics_json={path}")
    with pytest.raises(app.UsageError) as error:
        example_flags.check_output_file("metrics_json", flag_values=flag_values)
    assert f"{path} already exists. Pass --overwrite to replace it" in str(error.value)


def test_output_file_overwrite_allowed(example_flags, flag_values, tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("{}")
    _parse(flag_values, f"--metrics_json={path}")
    example_flags.check_output_file("metrics_json", overwrite=True, flag_values=flag_values)
    assert path.read_text() == "{}"


def test_output_folder_is_file(example_flags, flag_values, tmp_path):
    path = tmp_path / "exports"
    path.write_text("")
    _parse(flag_values, f"--export_dir={path}")
    with pytest.raises(app.UsageError, match="--export_dir must name a folder, but .* is a file"):
        example_flags.check_output_folder("export_dir", flag_values=flag_values)


def test_output_folder_below_file(example_flags, flag_values, tmp_path):
    (tmp_path / "exports").write_text("")
    _parse(flag_values, f"--export_dir={tmp_path / 'exports' / 'census'}")
    with pytest.raises(app.UsageError, match="--export_dir is below .*exports, which is a file"):
        example_flags.check_output_folder("export_dir", flag_values=flag_values)


def test_output_folder_missing_passes(example_flags, flag_values, tmp_path):
    folder = tmp_path / "runs" / "census"
    _parse(flag_values, f"--export_dir={folder}")
    example_flags.check_output_folder("export_dir", flag_values=flag_values)
    assert not folder.exists()


def test_short_usage_error_prints_message_and_exits(example_flags, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["train.py"])

    def main(argv):
        del argv
        raise app.UsageError("--metrics_json: the folder does not exist")

    with pytest.raises(SystemExit) as exit_info:
        example_flags.with_short_usage_errors(main)(["train.py"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == (
        "train.py: error: --metrics_json: the folder does not exist\n"
        "Pass --helpshort to see this script's flags.\n"
    )


def test_short_usage_errors_keep_the_result(example_flags):
    assert example_flags.with_short_usage_errors(lambda argv: len(argv))(["a", "b"]) == 2
