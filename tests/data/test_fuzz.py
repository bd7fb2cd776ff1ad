"""Damaged mp4 files never raise out of the loader under the default policy.

Decoding runs in a subprocess, so a native crash of a decoder fails the test instead of ending
the test run.
"""

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hang_guard import HANG_GUARD_S

LOADER_SCRIPT = textwrap.dedent("""
    import sys
    from clipadapt.data import VideoDataset, build_loader

    for backend in ("decord", "pyav"):
        dataset = VideoDataset(sys.argv[1], num_frames=4, stride=3, size=32, train=True, backend=backend)
        loader = build_loader(dataset, batch_size=6, shuffle=True, seed=0)
        seen = sum(len(batch["label"]) for batch in loader)
        print(backend, seen, loader.bad_samples)
""")

damage = st.fixed_dictionaries({
    "keep": st.one_of(st.none(), st.floats(0.0, 1.0)),
    "flips": st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 7)), max_size=30),
})


def damaged(data: bytes, keep, flips) -> bytes:
    corrupt = bytearray(data if keep is None else data[: int(len(data) * keep)])
    for position, bit in flips:
        if corrupt:
            corrupt[int(position * len(corrupt))] ^= 1 << bit
    return bytes(corrupt)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(damage, min_size=12, max_size=12))
def test_damaged_videos_never_stop_the_loader(video_file, damages):
    data = video_file.read_bytes()
    folder = Path(tempfile.mkdtemp(prefix="clipadapt-fuzz-"))
    lines = []
    for number, change in enumerate(damages):
        path = folder / f"damaged_{number}.mp4"
        path.write_bytes(damaged(data, **change))
        lines += [f"{path} {number % 4}", f"{video_file} 0"]
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        [sys.executable, "-c", LOADER_SCRIPT, str(folder / "list.txt")], capture_output=True, text=True, timeout=HANG_GUARD_S
    )
    assert result.returncode == 0, f"loader died with {result.returncode}:\n{result.stderr[-3000:]}"
    counts = [line.split() for line in result.stdout.splitlines()]
    assert [(backend, int(seen)) for backend, seen, _ in counts] == [("decord", 24), ("pyav", 24)]
