"""Flag checks that the example scripts share. This file is not an example itself.

The `require_*` functions register absl validators. absl runs them when it parses the
command line and again whenever a script assigns the flag, so a bad value stops the
script with a flag error before it imports TensorFlow, loads data or trains. The
`check_output_*` functions raise `app.UsageError`, and a script calls them at the start
of `main`, so a path that cannot be written fails before training, not after it. Scripts
start with `example_flags.run(main)`, which prints such an error in a few lines.
"""

import math
import os
import pathlib
import sys
from typing import Callable, Mapping, Optional, Sequence

from absl import app, flags, logging

FLAGS = flags.FLAGS


def _interval(low: float, high: float, include_low: bool, include_high: bool) -> str:
    """Describe an interval in words, for example "a finite number > 0" or "a number in [0, 1)"."""
    if high == math.inf:
        return f"a finite number {'>=' if include_low else '>'} {low:g}"
    return f"a number in {'[' if include_low else '('}{low:g}, {high:g}{']' if include_high else ')'}"


def _in_interval(value: float, low: float, high: float, include_low: bool, include_high: bool) -> bool:
    if not math.isfinite(value):
        return False
    above = value >= low if include_low else value > low
    below = value <= high if include_high else value < high
    return above and below


def require_number(
    flag_name: str,
    low: float,
    high: float = math.inf,
    include_low: bool = True,
    include_high: bool = True,
    flag_values: flags.FlagValues = FLAGS,
) -> None:
    """Reject values of the float flag `flag_name` outside the interval, NaN and infinity."""
    expected = _interval(low, high, include_low, include_high)

    def check(value):
        if value is not None and not _in_interval(value, low, high, include_low, include_high):
            raise flags.ValidationError(f"--{flag_name} must be {expected}. Received: {value}")
        return True

    flags.register_validator(flag_name, check, flag_values=flag_values)


def require_choices(flag_name: str, choices: Sequence[str], flag_values: flags.FlagValues = FLAGS) -> None:
    """Reject an empty value of the list flag `flag_name`, or an entry not in `choices`."""
    valid = ", ".join(choices)

    def check(values):
        if not values:
            raise flags.ValidationError(f"--{flag_name} must list at least one of {valid}. Received: an empty list")
        for value in values:
            if value not in choices:
                raise flags.ValidationError(
                    f"--{flag_name} entries must be one of {valid}. Received: {value!r}"
                )
        return True

    flags.register_validator(flag_name, check, flag_values=flag_values)


def require_numbers(
    flag_name: str,
    low: float,
    high: float,
    include_low: bool = True,
    include_high: bool = True,
    flag_values: flags.FlagValues = FLAGS,
) -> None:
    """Reject an empty value of the list flag `flag_name`, or an entry that is not a number in the interval."""
    expected = _interval(low, high, include_low, include_high)

    def check(values):
        if not values:
            raise flags.ValidationError(f"--{flag_name} must list at least one number. Received: an empty list")
        for value in values:
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not _in_interval(number, low, high, include_low, include_high):
                raise flags.ValidationError(
                    f"--{flag_name} entries must each be {expected}. Received: {value!r}"
                )
        return True

    flags.register_validator(flag_name, check, flag_values=flag_values)


def apply_quick_mode(values: Mapping[str, object], flag_values: flags.FlagValues = FLAGS) -> None:
    """Set each flag in `values` that the command line did not set.

    A flag given on the command line keeps its value, and the script logs that it kept it.
    Assigning a flag runs its validators, so a quick value must pass them too.
    """
    for name, value in values.items():
        if flag_values[name].present:
            logging.info("--quick keeps --%s=%s from the command line.", name, flag_values[name].value)
        else:
            setattr(flag_values, name, value)


def _check_writable_folder(folder: pathlib.Path, flag_name: str, value: str) -> None:
    if not folder.is_dir():
        raise app.UsageError(
            f"The folder of --{flag_name} does not exist: {folder}. Create it or choose "
            f"another path. Received: --{flag_name}={value}"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise app.UsageError(
            f"The folder of --{flag_name} is not writable: {folder}. Choose another path. "
            f"Received: --{flag_name}={value}"
        )


def check_output_file(
    flag_name: str,
    suffix: Optional[str] = None,
    overwrite: bool = False,
    flag_values: flags.FlagValues = FLAGS,
) -> None:
    """Raise `app.UsageError` unless the file that flag `flag_name` names can be written.

    The folder must exist and be writable, the name must end in `suffix` when one is
    given, and an existing file is replaced only when `overwrite` is True. An empty or
    unset flag passes.
    """
    value = flag_values[flag_name].value
    if not value:
        return
    check_output_path(pathlib.Path(value), flag_name, value, suffix=suffix, overwrite=overwrite)


def check_output_path(
    path: pathlib.Path,
    flag_name: str,
    value: str,
    suffix: Optional[str] = None,
    overwrite: bool = False,
) -> None:
    """Raise `app.UsageError` unless the file `path`, set through `--flag_name=value`, can be written.

    `check_output_file` describes the rules. A script calls this function directly for a
    file inside an output folder, such as the results.json of `--output_dir`.
    """
    if suffix is not None and not path.name.endswith(suffix):
        raise app.UsageError(
            f"--{flag_name} must name a file ending in {suffix}. Received: --{flag_name}={value}"
        )
    if path.is_dir():
        raise app.UsageError(
            f"--{flag_name} must name a file, but {path} is a folder. Received: --{flag_name}={value}"
        )
    if path.exists():
        if not overwrite:
            raise app.UsageError(
                f"{path} already exists. Pass --overwrite to replace it, or choose another "
                f"path. Received: --{flag_name}={value}"
            )
        if not os.access(path, os.W_OK):
            raise app.UsageError(
                f"{path} exists and is not writable. Choose another path. Received: --{flag_name}={value}"
            )
    _check_writable_folder(path.parent, flag_name, value)


def check_output_folder(flag_name: str, flag_values: flags.FlagValues = FLAGS) -> None:
    """Raise `app.UsageError` unless the folder that flag `flag_name` names can be created or written.

    The folder must be a folder when it exists. When it does not, the nearest existing
    folder above it must be writable, because the script creates the missing folders.
    An empty or unset flag passes.
    """
    value = flag_values[flag_name].value
    if not value:
        return
    folder = pathlib.Path(value)
    if folder.exists() and not folder.is_dir():
        raise app.UsageError(
            f"--{flag_name} must name a folder, but {folder} is a file. Received: --{flag_name}={value}"
        )
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise app.UsageError(
            f"--{flag_name} is below {existing}, which is a file, not a folder. Received: --{flag_name}={value}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise app.UsageError(
            f"The folder {existing} is not writable, so --{flag_name} cannot be created or written. "
            f"Choose another path. Received: --{flag_name}={value}"
        )


def require_results_file(flag_name: str = "from_results", flag_values: flags.FlagValues = FLAGS) -> None:
    """Reject a value of `flag_name` that is not an existing file (a previous results.json)."""
    flags.register_validator(
        flag_name,
        lambda path: path is None or pathlib.Path(path).is_file(),
        message=f"--{flag_name} must name an existing results.json file.",
        flag_values=flag_values,
    )


def results_path(reading_results: bool, overwrite: bool, flag_name: str = "output_dir") -> pathlib.Path:
    """Create the folder of `--flag_name` and return its results.json path.

    Unless the script only reads earlier results, an existing results.json stops the
    script (`app.UsageError`) unless `overwrite` is set.
    """
    check_output_folder(flag_name)
    output_dir = pathlib.Path(FLAGS[flag_name].value)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "results.json"
    if not reading_results:
        check_output_path(path, flag_name, FLAGS[flag_name].value, overwrite=overwrite)
    return path


def check_export_folder(flag_name: str = "export_dir") -> None:
    """Raise `app.UsageError` unless `--flag_name` can hold SavedModel versions.

    Besides `check_output_folder`, this rejects a version folder itself (one that contains
    saved_model.pb), with the library's message that names its parent.
    """
    check_output_folder(flag_name)
    value = FLAGS[flag_name].value
    if not value:
        return
    from mtl_layers.export import check_export_dir

    try:
        check_export_dir(value)
    except ValueError as error:
        raise app.UsageError(f"--{flag_name}: {error}") from error


def check_all(*checks) -> None:
    """Run every check, then raise one `app.UsageError` that lists all their messages.

    Each check is a function without arguments that raises `app.UsageError`, such as
    `lambda: check_output_file("metrics_json")`. A user who reruns a script then learns
    about every existing output at once, not one per attempt.
    """
    messages = []
    for check in checks:
        try:
            check()
        except app.UsageError as error:
            messages.append(str(error))
    if messages:
        raise app.UsageError("\n".join(messages))


def with_short_usage_errors(main: Callable[[Sequence[str]], object]) -> Callable[[Sequence[str]], object]:
    """Return `main`, changed to report an `app.UsageError` in a few lines and exit.

    `app.run` responds to such an error with the script's whole docstring, dozens of lines
    above the line that states the error. This prints the message, a pointer to
    `--helpshort`, and exits with the error's exit code (1).
    """

    def main_with_short_usage_errors(argv: Sequence[str]) -> object:
        try:
            return main(argv)
        except app.UsageError as error:
            program = os.path.basename(sys.argv[0]) if sys.argv else "script"
            sys.stderr.write(
                f"{program}: error: {error}\nPass --helpshort to see this script's flags.\n"
            )
            sys.exit(error.exitcode)

    return main_with_short_usage_errors


def run(main: Callable[[Sequence[str]], object]) -> None:
    """Run `main` with `app.run`, reporting usage errors in a few lines."""
    app.run(with_short_usage_errors(main))
