"""The randomized operations test (issue 16; tests/integration/operations.py
has the schedule, the operations and the exact check; docs/reliability.md
"Randomized operations test").

A random seed each run, printed with the schedule it ran:

    PROJECTORD_OPS_SEED=N      replay a seed
    PROJECTORD_OPS_SECONDS=S   the schedule's length (default 90 s; 40 s
                               with PROJECTORD_TEST_SLOWDOWN > 1, the ASan pass)
    PROJECTORD_OPS_PROFILE=P   only some operations (operations.PROFILES)

The same seed, length and profile give the same operations in the same
order; only their timing against the daemons varies. The hour-long run is
`/usr/bin/python3 tests/integration/operations.py --minutes 60`.
Failures it finds become fixed-seed tests in test_operations_seeds.py.
"""

import os
import random

from daemon import SLOWDOWN
from operations import OperationsRun


def run_schedule(request, cluster, workdir, seed, seconds, profile="all", settle_s=60):
    """Run one schedule on its own database of `cluster`; fail with the
    findings, the replay command and the daemons' log tails."""
    run = OperationsRun(cluster, seed, seconds, profile, workdir=workdir, settle_s=settle_s,
                        dbname=f"ops_{os.getpid()}_{seed % 100000}_{profile.replace('-', '_')}")
    try:
        run.run()
    finally:
        request.node.daemons = [i.daemon for i in run.instances.values() if i.daemon.proc is not None]
        run.close()
    print(run.report())
    assert not run.findings, run.report()
    return run


def test_random_operations(request, cluster, workdir):
    seed = int(os.environ.get("PROJECTORD_OPS_SEED") or random.randrange(1, 1 << 30))
    seconds = float(os.environ.get("PROJECTORD_OPS_SECONDS") or (90 if SLOWDOWN <= 1 else 40))
    profile = os.environ.get("PROJECTORD_OPS_PROFILE", "all")
    print(f"operations seed {seed} ({seconds:g} s, profile {profile}); replay with "
          f"PROJECTORD_OPS_SEED={seed} PROJECTORD_OPS_SECONDS={seconds:g} PROJECTORD_OPS_PROFILE={profile}")
    run_schedule(request, cluster, workdir, seed, seconds, profile)


def test_the_schedule_is_a_pure_function_of_the_seed():
    """A seed replays: the same operations, arguments and order (only the
    timing against the daemons varies), whatever ran before."""
    from operations import PROFILES, initial_config, make_schedule
    for profile in PROFILES:
        first = [str(op) for op in make_schedule(4242, 120, profile)]
        random.seed(1)
        again = [str(op) for op in make_schedule(4242, 120, profile)]
        assert first == again, profile
        assert initial_config(4242, profile) == initial_config(4242, profile)
        assert first != [str(op) for op in make_schedule(4243, 120, profile)], profile
    kinds = {op.kind for seed in range(20) for op in make_schedule(seed, 180)}
    assert kinds == set(PROFILES["all"]), "the full profile draws every kind of operation"
