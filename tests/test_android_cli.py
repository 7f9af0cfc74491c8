"""`ecbdeploy bench-android` is reachable from the main CLI (kept apart: importing the CLI loads torch)."""

from click.testing import CliRunner

from ecbdeploy.android.command import bench_android_command
from ecbdeploy.cli import cli


def test_bench_android_is_a_subcommand_of_ecbdeploy():
    assert cli.get_command(None, "bench-android") is bench_android_command
    out = CliRunner().invoke(cli, ["bench-android", "--help"])
    assert out.exit_code == 0 and "Usage: cli bench-android [OPTIONS] MODELS..." in out.output
