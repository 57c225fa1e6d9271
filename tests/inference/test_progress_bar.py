"""The stderr progress bar: one line per finished item in logs, in-place redraws on a terminal."""

import io

from unet_fast.inference.progress import Progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_mode_writes_one_line_per_item_and_skips_partials() -> None:
    out = io.StringIO()
    bar = Progress(2, "segment", stream=out)
    bar.update(0.5, "half of a.png", partial=True)
    bar.update(1, "a.png")
    bar.update(2, "b.png")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "1/2" in lines[0] and "a.png" in lines[0] and "2/2" in lines[1]
    assert "#" * 28 in lines[1]


def test_terminal_mode_redraws_in_place() -> None:
    out = FakeTerminal()
    bar = Progress(4, "segment", stream=out)
    bar.update(0.5, "patches", partial=True)
    bar.update(4, "done")
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and "4/4" in text


def test_disabled_writes_nothing() -> None:
    out = io.StringIO()
    Progress(3, stream=out, enabled=False).update(3)
    assert out.getvalue() == ""


def test_a_line_said_between_updates_stands_on_its_own() -> None:
    """A failure printed while the bar is drawn in place clears the bar's line first (no glued text)."""
    out = FakeTerminal()
    bar = Progress(2, "segment", stream=out)
    bar.update(1, "a.png")
    bar.say("unet-fast segment: failed: b.png: ValueError: x")
    bar.update(2, "b.png FAILED")
    lines = [part.strip() for part in out.getvalue().replace("\r", "\n").split("\n") if part.strip()]
    assert "unet-fast segment: failed: b.png: ValueError: x" in lines
    quiet = io.StringIO()
    Progress(2, stream=quiet, enabled=False).say("failed: shown even when the bar is off")
    assert quiet.getvalue() == "failed: shown even when the bar is off\n"
