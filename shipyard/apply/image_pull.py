"""pyinfra operation: upstream images (image source ``official``) present on the host.

Pulls only what is missing, one image at a time, so that where no registry answers (an
air-gapped site, or these CI machines) the deploy stops at the first image with a plain
message and the fix, instead of a compose error halfway through a tier.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, operation

from shipyard.commands import to_shell


class MissingImages(FactBase):
    """The refs that are not on the host."""

    def command(self, refs: tuple[str, ...]) -> str:
        quoted = " ".join(shlex.quote(r) for r in refs)
        return f"for r in {quoted}; do docker image inspect --format . \"$r\" >/dev/null 2>&1 || echo \"$r\"; done"

    @staticmethod
    def default():
        return []  # all present: no output, and pyinfra then gives the default

    def process(self, output):
        return [line.strip() for line in output if line.strip()]


def pull_or_explain(ref: str, env: str) -> str:
    message = (f"host {host.name}: cannot pull {ref}: no registry answers (last lines of `docker pull` above). "
               f"fix: set images.source to 'local' in inventories/{env}.py (images built on the host from "
               f"Debian packages), or images.mirror to a registry mirror that answers")
    # A private temp file (mktemp), not a fixed /tmp path another user could have planted.
    return (f'log=$(mktemp) && {{ {to_shell(["docker", "pull", "--quiet", ref])} >"$log" 2>&1 && rm -f "$log" || '
            f'{{ tail -n 3 "$log" >&2; rm -f "$log"; echo {shlex.quote(message)} >&2; exit 1; }}; }}')


@operation()
def official_images(refs: list[str], env: str):
    missing = host.get_fact(MissingImages, refs=tuple(refs))
    for ref in missing:
        yield StringCommand(pull_or_explain(ref, env))
    if not missing:
        host.noop(f"{len(refs)} upstream images present")


def ensure_official_images(refs: list[str], env: str) -> None:
    if refs:
        official_images(name="upstream images (official source)", refs=refs, env=env)
