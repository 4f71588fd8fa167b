"""Backoff schedule and password masking."""

from __future__ import annotations

import random

from bridged.backoff import JITTER_FLOOR, PROBE_FAST, PROBE_FAST_SPELL, PROBE_SLOW, Backoff, ProbeSchedule
from bridged.config import ReconnectConfig
from bridged.secrets import mask_text, mask_url, url_password


def test_backoff_grows_exponentially_up_to_the_cap_with_jitter():
    backoff = Backoff(ReconnectConfig(initial_delay=1, max_delay=10, multiplier=2), random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [1, 2, 4, 8, 10, 10, 10, 10]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert JITTER_FLOOR * ceiling <= delay <= ceiling
    assert len(set(delays)) == len(delays), "no jitter"
    assert backoff.attempts == 8


def test_backoff_reset_starts_over():
    backoff = Backoff(ReconnectConfig(initial_delay=1, max_delay=100, multiplier=3))
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay() <= 1


def test_backoff_never_overflows():
    backoff = Backoff(ReconnectConfig(initial_delay=1, max_delay=60, multiplier=1e300))
    for _ in range(10_000):
        assert backoff.next_delay() <= 60


def test_probes_are_fast_for_a_minute_after_a_connect_then_slow_down_to_the_cap():
    """Checks for a missing exchange: every PROBE_FAST in the first PROBE_FAST_SPELL, then doubling to PROBE_SLOW."""
    now = 1000.0
    schedule = ProbeSchedule(now)
    intervals = []
    while now < 1000.0 + PROBE_FAST_SPELL + 300:
        now = schedule.next_at
        assert schedule.due(now) and not schedule.due(now - 0.01)
        schedule.checked(now)
        intervals.append(round(schedule.next_at - now, 3))
    fast = int(PROBE_FAST_SPELL / PROBE_FAST)
    assert set(intervals[: fast - 1]) == {PROBE_FAST}
    slow = intervals[fast:]
    assert slow == sorted(slow) and slow[-1] == PROBE_SLOW and max(slow) == PROBE_SLOW
    per_minute = 60 / PROBE_SLOW
    assert per_minute <= 6, "a service never deployed must cost the broker only a few checks a minute"


def test_mask_url():
    assert mask_url("amqp://user:s3cret@host:5672//") == "amqp://user:****@host:5672//"
    assert mask_url("amqp://host//") == "amqp://host//"
    assert mask_url("amqp://user@host//") == "amqp://user@host//"
    assert mask_url("failed amqps://a:b%40c@h/v and amqp://x:y@z") == "failed amqps://a:****@h/v and amqp://x:****@z"


def test_mask_text_masks_literal_passwords_too():
    assert mask_text("login refused for p@ss", ("p@ss",)) == "login refused for ****"
    assert url_password("amqp://u:p%40ss@h//") == "p@ss"
    assert url_password("amqp://h:bad") == ""


def test_daemon_without_log_file_needs_dev_log(monkeypatch, tmp_path):
    """--daemon with no --log-file and no /dev/log would discard bridged's own log: refused before the fork."""
    from bridged.daemon import SyslogLogStream, check_own_log

    monkeypatch.setattr(SyslogLogStream, "ADDRESS", str(tmp_path / "no-dev-log"))
    assert (
        check_own_log(None, daemon=True)
        == f"--daemon needs --log-file: there is no {tmp_path}/no-dev-log for bridged's own log"
    )
    assert check_own_log(None, daemon=False) is None  # the foreground logs to stderr
    assert check_own_log(str(tmp_path / "own.log"), daemon=True) is None
    assert check_own_log(str(tmp_path / "no-dir" / "own.log"), daemon=False) == (
        f"cannot open --log-file {tmp_path}/no-dir/own.log: No such file or directory"
    )


def test_masking_hides_every_part_of_an_odd_password():
    from bridged.secrets import mask_broker_url

    for url in ("amqp://u:p@ss/w#rd:x y@host:5672//", "amqp://u:a@b@host//"):
        masked = mask_url(url)
        assert masked.startswith("amqp://u:****@") and "ss" not in masked.split("@")[0]
    assert mask_broker_url("amqp://u:p@ss w0rd@host//") == "amqp://u:****@host//"


def test_own_log_that_cannot_be_written_never_raises():
    """Disk full or a file size limit on bridged's own log loses log lines, never the daemon."""
    import errno

    from bridged.log import configure, get_logger

    class Full:
        def write(self, text: str) -> int:
            raise OSError(errno.EFBIG, "File too large")

        def flush(self) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        def isatty(self) -> bool:
            return False

    configure("json", "debug", Full())
    try:
        get_logger(binding="b").error("sink_failed", reason="x")  # must not raise
    finally:
        configure("json", "info")
