import subprocess
import sys

import pytest

from lesionlocator.cli import STAGE_MODULES, build_parser, main


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_every_stage_module_adds_a_subcommand():
    assert len(_subcommands()) >= len(STAGE_MODULES)


@pytest.mark.parametrize("command", _subcommands())
def test_help_of_each_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: lesionlocator" in capsys.readouterr().out


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
