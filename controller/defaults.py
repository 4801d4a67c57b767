"""Every default of the controller, in one place. Commands show these in ``--help``; dataclasses take
them as field defaults. The measurement defaults (runs, warmup, seconds) are the agent's own
:class:`agent.job.JobSpec` defaults, used through a JobSpec template (``RunOptions.job``); so are the
device's workdir and the lock timeout."""

from agent import daemon_client as agent_daemon_client
from agent import lock as agent_lock

DEVICES_FILE = "devices.yaml"  #: the fleet file, relative to the working directory
OUT_DIR = "reports"  #: where run folders go
WORKDIR = agent_daemon_client.WORKDIR  #: a device's work folder (agent, models cache, runs, lock): the agent's
PARALLEL_DEVICES = 8  #: devices worked on at once
JOB_TIMEOUT = 300.0  #: seconds: deadline of one job's worker on the device
CONNECT_TIMEOUT = 10.0  #: seconds: SSH connect + handshake
COMMAND_TIMEOUT = 120.0  #: seconds: one remote command (the batch has its own, from its jobs)
LOCK_TIMEOUT = agent_lock.LOCK_TIMEOUT  #: seconds a run waits for a busy device's lock: the agent's
RECONNECT_ATTEMPTS = 5  #: a daemon device's run reconnects this many times after its link dropped
RECONNECT_BACKOFF = 1.0  #: seconds before the first reconnect; doubles for each next one (at most 30)
SYNC_START_TIMEOUT = 120.0  #: seconds devices wait for each other before they start measuring
CHECK_DEADLINE = 60.0  #: seconds: `devices --check`, whole call
MAX_CHECK_DEADLINE = 3600.0  #: seconds: the largest `devices --check --timeout` accepted
PIP_TIMEOUT = 900.0  #: seconds: `bootstrap`'s pip install on a device
TOP1_DROP = 2.0  #: drift flag: top-1 points below fp32
MIN_COSINE = 0.99  #: drift flag: worst output's mean cosine similarity to fp32 below this
NIGHTLY_COOLDOWN = 60.0  #: seconds a nightly waits before re-measuring suspected changes
NIGHTLY_WINDOW = 60  #: nightlies per series searched for change points
PLOT_PROCESSES = 2  #: processes drawing the HTML report's figures (capped by the cores; 1 = no fork)
PLOT_CHILD_TIMEOUT = 120.0  #: seconds the report waits for its figure process before drawing its figures itself


def cache_folder(*parts: str) -> str:
    """A folder under this user's edgebench cache: ``$XDG_CACHE_HOME/edgebench/...`` (``~/.cache`` when
    unset). The ONE place that says where the controller caches things (agent builds, device info)."""
    import os

    root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(root, "edgebench", *parts)
