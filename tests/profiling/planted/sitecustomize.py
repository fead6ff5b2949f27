"""Test-only: imported by Python at start-up when this folder is on PYTHONPATH (with tests/planted
beside it, see tests.planted.pythonpath), it gives toy-redis two commands with a known cost, so a
profile can be checked against what it must show:

    PLANTED.HOT <ms>     burns CPU in deliberate_hot_spot for that long
    PLANTED.LEAK <kb>    keeps that many KB more in deliberate_leak's list, for good

Never installed on a node by a deploy: the profiling lab test uploads it (and planted_costs.py) for
its own run only."""

from planted_costs import deliberate_hot_spot, deliberate_leak
from toy_redis.commands.base import command, to_int


@command("planted.hot", 2, "", group="server", summary="Test-only: burn CPU for <ms> milliseconds.")
def cmd_planted_hot(conn, argv):
    return deliberate_hot_spot(to_int(argv[1]) / 1000)


@command("planted.leak", 2, "", group="server", summary="Test-only: keep <kb> KB more, for good.")
def cmd_planted_leak(conn, argv):
    return deliberate_leak(to_int(argv[1]))
