"""The two small stdlib scripts that prepare a device in as few round trips as the protocol allows.

* **probe** (one command): a fixed ``sh -c`` line resolves ``~`` in the workdir, picks the python
  (:func:`controller.fleet.inventory.resolve_python` decides the order; the shell only answers its "when
  the venv exists there") and ``exec``\\ s it on the probe script, which creates the workdir's folders and
  prints one JSON line: the workdir, the python, the files already in the content-addressed cache
  (``agent/``, ``models/``, ``data/``), the free space, and the facts that key the controller's info
  cache (python, kernel, installed runtime and numpy versions read from the ``name-version.dist-info``
  folder names - nothing is imported, not even ``importlib.metadata``, which alone costs ~0.2 s).
* **stage** (one command): the files to push ride on the command's stdin (a JSON header line, then
  their bytes); each goes to a temp name, is sha256-checked and renamed to its final name only when it
  matches; then, when asked, the script runs ``agent info`` with the same python and prints one JSON
  line with the verdicts and the info output.

Both scripts are constants: every value reaches them as an argument or on stdin, never as code (the
command line is still built by :func:`controller.fleet.transport.shell_command`). Where the device
computes what the agent also computes (free disk space, whether a runtime is installed), the script
carries the agent's own function's source, so it is the same code. The versions it reads are a guess
and a cache key only: ``agent info`` (the agent's package-metadata reading and import check) has the
last word.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any, Callable

from agent import probes, runtimes
from controller.fleet.inventory import Device, resolve_python

#: where ``edgebench bootstrap`` puts the venv's python, relative to the workdir
VENV_PYTHON = "venv/bin/python"
#: the cache folders whose file names the probe lists
CACHE_FOLDERS = ("agent", "models", "data")
CHUNK = 1 << 20  #: bytes per stdin write while staging

# $1 workdir as written in the inventory, $2 the venv python (relative to it) when the rule prefers it
# else "", $3 the python otherwise, $4 the probe script, $5 its request (JSON).
PROBE_SH = (
    'w=$1; case $w in "~") w=$HOME ;; "~/"*) w=$HOME/${w#??} ;; esac; '
    'py=$3; if [ -n "$2" ] && [ -e "$w/$2" ]; then py=$w/$2; fi; '
    'exec "$py" -c "$4" "$py" "$w" "$5"'
)

_PROBE_BODY = """
import json, os, sys, time, types
py, w, req = sys.argv[1], sys.argv[2].rstrip('/') or '/', json.loads(sys.argv[3])
out = {'python': py, 'workdir': w, 'error': None, 'present': {}}
try:
    for sub in req['dirs']:
        os.makedirs(os.path.join(w, sub), exist_ok=True)
except OSError as exc:
    where = exc.filename or w
    why = 'exists and is not a directory' if isinstance(exc, FileExistsError) else (exc.strerror or str(exc))
    out['error'] = {'kind': 'workdir', 'message': 'cannot create the workdir folder %s: %s' % (where, why)}
    print(json.dumps(out))
    sys.exit(0)
out['removed_parts'] = []
for sub in req['list']:
    try:
        names = os.listdir(os.path.join(w, sub))
    except OSError:
        names = []
    out['present'][sub] = sorted(n for n in names if '.part-' not in n)
    for name in names:  # upload temp files of a killed controller: stale once older than part_age
        path = os.path.join(w, sub, name)
        try:
            if '.part-' in name and time.time() - os.lstat(path).st_mtime > req['part_age']:
                os.unlink(path)
                out['removed_parts'].append(path)
        except OSError:
            pass
out['disk_free_kb'] = disk_free_kb(w)
# Installed versions from the metadata folders pip writes (name-version.dist-info), first on sys.path
# first: importing importlib.metadata alone costs ~0.2 s (email, zipfile, csv ...) on a small board.
dists = {}
for entry in sys.path:
    try:
        listing = os.listdir(entry or '.')
    except OSError:
        continue
    for item in listing:
        stem, dot, kind = item.rpartition('.')
        if kind in ('dist-info', 'egg-info') and '-' in stem:
            name, version = stem.split('-')[:2]
            dists.setdefault(name.lower().replace('-', '_').replace('.', '_'), version)

def version_of(names):
    for n in names:
        if n.lower().replace('-', '_').replace('.', '_') in dists:
            return dists[n.lower().replace('-', '_').replace('.', '_')]
    return None

found = {}
for name, module, names in req['runtimes']:
    spec = types.SimpleNamespace(name=name, module=module, distributions=tuple(names))
    found[name] = version_of(names) if _installed(spec) else None
out['facts'] = {'executable': sys.executable, 'python_version': '%d.%d.%d' % sys.version_info[:3],
                'uname': list(os.uname()), 'cpu_count': os.cpu_count(), 'runtimes': found,
                'numpy_version': version_of(['numpy'])}
print(json.dumps(out))
"""

#: the probe: the agent's own disk_free_kb and _installed (find_spec), then the body above
PROBE_PY = "\n".join([
    "from __future__ import annotations",
    "import importlib, importlib.util, os",
    inspect.getsource(probes.disk_free_kb),
    inspect.getsource(runtimes._installed),
    _PROBE_BODY,
])

STAGE_PY = """
import hashlib, json, os, subprocess, sys
inp = sys.stdin.buffer
head = json.loads(inp.readline())
out = {'files': {}, 'error': None, 'info': None}

def stop(kind, message):
    out['error'] = {'kind': kind, 'message': message}
    print(json.dumps(out))
    sys.exit(0)

for tmp, want, final, size in head['files']:
    h, left = hashlib.sha256(), size
    try:
        with open(tmp, 'wb') as f:
            while left:
                block = inp.read(min(left, 1 << 20))
                if not block:
                    raise EOFError
                f.write(block)
                h.update(block)
                left -= len(block)
    except (OSError, EOFError) as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, EOFError):
            stop('push', 'the upload of %s ended after %d of %d bytes' % (final, size - left, size))
        kind = 'disk_full' if exc.errno == 28 else 'push'
        stop(kind, 'writing %s failed: %s' % (tmp, exc.strerror or exc))
    if h.hexdigest() == want:
        os.replace(tmp, final)
        out['files'][final] = 'ok'
    else:
        os.unlink(tmp)
        out['files'][final] = 'mismatch ' + h.hexdigest()
if head['info']:
    proc = subprocess.run([sys.executable] + head['info'], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    out['info'] = {'exit_code': proc.returncode, 'stdout': proc.stdout.decode('utf-8', 'replace'),
                   'stderr': proc.stderr.decode('utf-8', 'replace')[-4000:]}
print(json.dumps(out))
"""


def stale_part_age(device: Device) -> float:
    """Seconds after which an upload temp file (``*.part-*``) on ``device`` belongs to no live upload
    (see :mod:`controller.fleet.part_files`): the probe removes older ones."""
    from controller.fleet.part_files import STALE_FACTOR

    return STALE_FACTOR * device.command_timeout


def probe_argv(device: Device, subdirs: Sequence[str], use_venv: bool = True) -> tuple[list[str], str]:
    """The probe command for ``device`` (creating ``agent`` and ``subdirs`` under its workdir) and the
    python it runs when the venv is absent (named in a "cannot be run" error). The order of the
    interpreters is :func:`resolve_python`'s: the venv goes first exactly when that rule prefers it (and
    ``use_venv``)."""
    marker = "\0venv"
    venv_first = use_venv and resolve_python(device, venv_python=marker) == marker
    otherwise = resolve_python(device)
    request = {"dirs": ["agent", *CACHE_FOLDERS[1:], *subdirs], "list": list(CACHE_FOLDERS),
               "part_age": stale_part_age(device),
               "runtimes": [[s.name, s.module, list(s.distributions)] for s in runtimes.RUNTIMES]}
    argv = ["sh", "-c", PROBE_SH, "edgebench-probe", device.workdir, VENV_PYTHON if venv_first else "",
            otherwise, PROBE_PY, json.dumps(request)]
    return argv, otherwise


def stage_input(files: Sequence[tuple[str, str, str, str]], info_argv: list[str] | None,
                on_bytes: Callable[[int], None]) -> tuple[Iterator[bytes], int]:
    """stdin for the stage script: the header line, then each (local, sha256, temp, final) file's
    bytes; and the total bytes of the files. ``on_bytes`` is told the bytes sent so far."""
    sizes = [os.path.getsize(f[0]) for f in files]
    head = {"files": [[tmp, digest, final, size] for (_, digest, tmp, final), size in zip(files, sizes)],
            "info": info_argv}

    def chunks() -> Iterator[bytes]:
        yield (json.dumps(head) + "\n").encode()
        sent = 0
        for local, *_ in files:
            with open(local, "rb") as fh:
                for block in iter(lambda: fh.read(CHUNK), b""):
                    yield block
                    sent += len(block)
                    on_bytes(sent)

    return chunks(), sum(sizes)


def last_json_line(stdout: str) -> dict[str, Any] | None:
    """The JSON object on the last non-empty line of ``stdout``, or None when there is none."""
    lines = [line for line in stdout.strip().splitlines() if line.strip()]
    if not lines:
        return None
    try:
        value = json.loads(lines[-1])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def provisional_runtime(device: Device, facts: dict[str, Any]) -> tuple[str, str] | None:
    """(name, version) of the runtime a run will most likely use, from the probe's package metadata
    (nothing imported): the device's ``runtime`` key, else the first installed in discovery order.
    ``agent info`` has the last word (it import-checks); None when no runtime is installed."""
    found = facts.get("runtimes") or {}
    for spec in runtimes.RUNTIMES:
        if device.runtime in ("auto", spec.name) and found.get(spec.name):
            return spec.name, str(found[spec.name])
    return None
