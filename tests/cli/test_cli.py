import re
import subprocess
import sys

import pytest

from lesionlocator.cli import STAGE_MODULES, build_parser, commands, main
from tests.helpers import REPO


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def _flags(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", help_text))


def test_every_command_module_is_a_stage_module_that_declares_commands():
    modules = {f"lesionlocator.cli.{p.stem}" for p in (REPO / "lesionlocator" / "cli").glob("*.py")}
    assert modules - {"lesionlocator.cli.__init__", "lesionlocator.cli.__main__", "lesionlocator.cli.command"} == set(STAGE_MODULES)
    assert _subcommands() == sorted(commands())
    assert len(commands()) > len(STAGE_MODULES)


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert re.findall(r"^    (\S+)", out, re.M) == list(commands())
    assert {"--verbose", "--version"} <= _flags(out)


@pytest.mark.parametrize("name", _subcommands())
def test_help_of_each_subcommand_shows_the_shared_flags_it_declares(name, capsys):
    command = commands()[name]
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: lesionlocator {name} ")
    flags = _flags(out)
    assert ("--config" in flags) == command.config
    assert ("--output" in flags) == (command.output is not None)
    assert ("--device" in flags) == (command.device is not None)
    assert "--verbose" not in flags  # top level only


def test_ingest_from_the_console_script(tiny_cohort, tmp_path):
    out = tmp_path / "m.parquet"
    result = subprocess.run(
        [sys.executable, "-m", "lesionlocator.cli", "ingest", "--root", str(tiny_cohort), "-o", str(out)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "2 patient(s), 6 session(s)" in result.stdout
    assert out.exists()


def test_errors_exit_2_with_the_file_named(tiny_cohort, tmp_path, capsys):
    bad = tiny_cohort / "sub-A1" / "ses-2" / "image.nii.gz"
    bad.write_bytes(b"junk")
    assert main(["ingest", "--root", str(tiny_cohort), "-o", str(tmp_path / "m.parquet")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(bad) in err


def test_config_flag_is_validated_before_the_command_runs(tmp_path, capsys):
    bad = tmp_path / "study.yaml"
    bad.write_text("metrics:\n  detection_iou: high\n")
    out = tmp_path / "never.parquet"
    assert main(["evaluate", "--patient", "P", "--session", "a", "p", "g", "--config", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(bad) in err and "detection_iou" in err
    assert not out.exists()
