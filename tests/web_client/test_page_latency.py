"""The page's in-band audio->video measurement ("Measure latency", web_client/probe.js) in Chromium
against the real server: the page pauses its microphone, sends its own buzzes, times the frames
whose mouth opens, puts the number in the overlay and gives the microphone back."""
from __future__ import annotations

from browser_util import MIN_FRAMES, TIMEOUT_MS, screenshot


def test_the_page_measures_audio_to_video_in_band(start_server, open_page, tmp_path):
    server = start_server(max_sessions=1)
    page = open_page(server.url)
    assert page.locator("#measure").is_disabled()              # nothing to measure before Start
    page.click("#start")
    page.wait_for_function("n => (window.stylecast.stats.framesDecoded || 0) >= n", arg=MIN_FRAMES,
                           timeout=TIMEOUT_MS)
    mic_id = page.evaluate("() => window.stylecast.pc.getSenders().find(s => s.track).track.id")
    page.click("#measure")
    page.wait_for_function("() => window.stylecast.measured !== null", timeout=TIMEOUT_MS)
    m = page.evaluate("() => window.stylecast.measured")
    assert m["bursts"] == 3 and m["found"] >= 2, m
    # through the real server and Chromium's own WebRTC: more than the feature lookahead plus a
    # frame, less than a second
    assert all(40 < x < 1000 for x in m["samplesMs"]), m
    assert sorted(m["samplesMs"])[(m["found"] - 1) // 2] == m["medianMs"]
    page.wait_for_function("() => document.getElementById('stat-latency').textContent.includes('measured')",
                           timeout=TIMEOUT_MS)
    text = page.locator("#stat-latency").inner_text()
    assert text.startswith(f"{m['medianMs']:.0f} ms measured"), text
    assert page.evaluate("() => window.stylecast.pc.getSenders().find(s => s.track).track.id") == mic_id
    assert page.locator("#measure").is_enabled() and page.locator("#notice").is_hidden()
    screenshot(page, tmp_path, "browser_measured")
