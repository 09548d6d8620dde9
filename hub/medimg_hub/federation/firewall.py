"""A loopback firewall: only the platform's own account may open connections to the federation.

Open-source Flower 1.41 serves its Control API (start and stop runs, register SuperNodes, read
logs) on the SuperLink's one port with **no user authentication** (account authentication is an
enterprise plugin), and each SuperNode serves its ClientAppIo API on a loopback port the same
way. The SuperLink binds 127.0.0.1 and sites reach it only through the Fleet gateway, but users'
kernels run on this machine too, as their own OS accounts, and loopback is open to every
account. These ports therefore get an nftables table that rejects (TCP reset) every new
connection to them from any account but the platform's: the hub side's ``flwr`` CLI, the
SuperExec and the apps it starts run as that account; a kernel is refused at ``connect()``.

Only connection attempts are filtered (a SYN without ACK), so replies and established
connections are never touched. The table is named after the SuperLink's port, so several
federations (tests) keep their own, and ``medimg fl down`` from a new process finds it again.
nftables must be installed (``scripts/bootstrap.sh`` does) and the platform must hold
``CAP_NET_ADMIN`` (root); where it cannot be applied the federation refuses to start, unless
``[federation] loopback_firewall = false`` says that no other account runs code on this machine.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from medimg_hub.servers.process import ServiceError

log = logging.getLogger(__name__)


class FirewallError(ServiceError):
    """The loopback firewall could not be applied or removed; the message says what to do."""


def _nft() -> str:
    found = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if found is None:
        raise FirewallError("nftables' `nft` is not installed: run scripts/bootstrap.sh (or apt-get install "
                            "nftables), or set [federation] loopback_firewall = false on a machine where no other "
                            "account runs code")
    return found


@dataclass(frozen=True)
class LoopbackFirewall:
    """Refuse new loopback TCP connections to ``ports`` from every account except ``uid``.

    Parameters
    ----------
    name
        The nftables table's suffix (``inet medimg_<name>``); letters, digits and ``_``.
    ports
        TCP ports on loopback to guard (the SuperLink's, the SuperNodes' ClientAppIo ports).
    uid
        The one account allowed to connect (the platform's, ``os.getuid()`` of ``medimg fl up``).
    """

    name: str
    ports: Sequence[int]
    uid: int

    @property
    def table(self) -> str:
        """The nftables table, ``medimg_<name>`` in family ``inet`` (IPv4 and IPv6)."""
        return f"medimg_{self.name}"

    def ruleset(self) -> str:
        """The ``nft -f`` script: (re)create the table with its one rule, atomically."""
        ports = ", ".join(str(int(p)) for p in sorted(set(self.ports)))
        return (f"table inet {self.table} {{}}\n"
                f"delete table inet {self.table}\n"
                f"table inet {self.table} {{\n"
                "  chain output {\n"
                "    type filter hook output priority 0; policy accept;\n"
                f'    oifname "lo" tcp dport {{ {ports} }} tcp flags & (syn | ack) == syn '
                f"meta skuid != {int(self.uid)} counter reject with tcp reset\n"
                "  }\n}\n")

    def apply(self) -> None:
        """Install (or replace) the table.

        Raises
        ------
        FirewallError
            ``nft`` is missing or refused the rules (not root: no ``CAP_NET_ADMIN``); the message has its error.
        """
        self._run(["-f", "-"], self.ruleset(), "apply")
        log.info("loopback firewall %s: ports %s only for uid %d", self.table, sorted(self.ports), self.uid)

    def remove(self) -> None:
        """Delete the table; nothing happens if it is not there."""
        self._run(["-f", "-"], f"table inet {self.table} {{}}\ndelete table inet {self.table}\n", "remove")

    def installed(self) -> bool:
        """Whether the table is in the kernel's ruleset now."""
        proc = subprocess.run([_nft(), "list", "table", "inet", self.table], capture_output=True, text=True)
        return proc.returncode == 0

    def _run(self, args: list[str], script: str, action: str) -> None:
        proc = subprocess.run([_nft(), *args], input=script, capture_output=True, text=True)
        if proc.returncode != 0:
            raise FirewallError(f"could not {action} the federation's loopback firewall (nftables table "
                                f"{self.table}): {proc.stderr.strip() or proc.stdout.strip()}. Run `medimg fl up` "
                                "as root (it needs CAP_NET_ADMIN), or set [federation] loopback_firewall = false "
                                "on a machine where no other account runs code")


__all__ = ["FirewallError", "LoopbackFirewall"]
