"""Login throttling per (account, client): growing delays, resets, strangers cannot lock a user out."""

from __future__ import annotations

from pathlib import Path

from medimg_hub.hubconf.throttle import ACCOUNT, LoginThrottle, client_key

DEVICE = client_key(device_trusted=True, address="10.0.0.1")
HOME = client_key(device_trusted=False, address="192.0.2.10")


def make(tmp_path: Path, now: list[float], **kw: float) -> LoginThrottle:
    return LoginThrottle(tmp_path / "throttle.sqlite", clock=lambda: now[0], **{"free_attempts": 3,
                         "max_delay_s": 60.0, "account_failures": 10, **kw})


def test_waits_grow_after_the_free_attempts_up_to_the_cap(tmp_path: Path) -> None:
    now = [1000.0]
    throttle = make(tmp_path, now)
    waits = []
    for _ in range(10):
        assert throttle.check("ana", HOME) is None
        throttle.failed("ana", HOME)
        wait = throttle.check("ana", HOME)
        waits.append(wait.seconds if wait else 0.0)
        now[0] += waits[-1]  # the client waits, then tries again
    assert waits == [0, 0, 0, 1, 2, 4, 8, 16, 32, 60]


def test_a_success_resets_the_client(tmp_path: Path) -> None:
    now = [1000.0]
    throttle = make(tmp_path, now)
    for _ in range(4):
        throttle.failed("ana", HOME)
    now[0] += 5
    assert throttle.check("ana", HOME) is None
    throttle.succeeded("ana", HOME)
    throttle.failed("ana", HOME)
    assert throttle.check("ana", HOME) is None  # one failure after a success: free again


def test_a_stranger_cannot_lock_out_the_users_browser_or_address(tmp_path: Path) -> None:
    now = [1000.0]
    throttle = make(tmp_path, now, account_failures=1000)
    strangers = [client_key(device_trusted=False, address=f"203.0.113.{i}") for i in range(5)]
    for stranger in strangers:
        for _ in range(6):
            throttle.failed("ana", stranger)
        assert throttle.check("ana", stranger) is not None
    assert throttle.check("ana", HOME) is None
    assert throttle.check("ana", DEVICE) is None


def test_a_spread_attack_slows_untrusted_clients_but_never_the_users_device(tmp_path: Path) -> None:
    now = [1000.0]
    throttle = make(tmp_path, now)
    for i in range(10):  # ten addresses, one guess each: no address is throttled on its own
        throttle.failed("ana", client_key(device_trusted=False, address=f"203.0.113.{i}"))
    fresh = client_key(device_trusted=False, address="198.51.100.7")
    assert throttle.check("ana", fresh) is not None
    assert throttle.check("ana", DEVICE) is None
    assert throttle.check("bob", fresh) is None  # other accounts are not concerned
    now[0] += 61  # the window passes
    assert throttle.check("ana", fresh) is None


def test_an_admin_unlock_clears_every_counter_of_the_account(tmp_path: Path) -> None:
    now = [1000.0]
    throttle = make(tmp_path, now)
    for _ in range(12):
        throttle.failed("ana", HOME)
    assert throttle.check("ana", HOME) is not None
    assert throttle.unlock("ana") == 2  # the client's row and the account's
    assert throttle.check("ana", HOME) is None


def test_addresses_are_not_stored_in_clear(tmp_path: Path) -> None:
    now = [1000.0]
    throttle = make(tmp_path, now)
    throttle.failed("ana", HOME)
    raw = (tmp_path / "throttle.sqlite").read_bytes()
    assert b"192.0.2.10" not in raw and HOME.encode() in raw and ACCOUNT.encode() in raw
