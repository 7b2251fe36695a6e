"""hearth.rootfs.debootstrap: a failed attempt is thrown away and tried again, then named.

The command is a small script standing in for debootstrap (which needs root, the network and a
minute): it fails the first N times the way debootstrap does when a download fails, leaving a
half-built root behind, and records the arguments it was given.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hearth.errors import HearthError
from hearth.rootfs import debootstrap


def _stand_in(tmp_path: Path, failures: int) -> Path:
    script = tmp_path / "debootstrap"
    count = tmp_path / "count"
    script.write_text(
        "#!/bin/sh\n"
        f'n=$(cat "{count}" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "{count}"\n'
        f'echo "$@" >> "{tmp_path}/argv"\n'
        'root="$5"\n'
        'if [ -e "$root/half-built" ]; then echo "E: $root was not emptied" >&2; exit 9; fi\n'
        'mkdir -p "$root"\n'
        f'if [ "$n" -le {failures} ]; then\n'
        '  touch "$root/half-built"\n'
        '  echo "W: Failure trying to run: chroot" >&2\n'
        '  echo "E: Couldn\'t download http://deb.debian.org/debian/pool/main/b/bash.deb" >&2\n'
        "  exit 1\n"
        "fi\n"
        'touch "$root/bin-sh"\n'
    )
    script.chmod(0o755)
    return script


def test_a_failed_download_is_tried_again_into_an_empty_root(tmp_path: Path) -> None:
    script = _stand_in(tmp_path, failures=2)
    said: list[str] = []
    pauses: list[float] = []
    root = tmp_path / "rootfs"
    debootstrap(suite="bookworm", rootfs=root, mirror="http://deb.debian.org/debian",
                include=["systemd", "python3"], components=["main", "contrib"],
                say=said.append, waits=[1.0, 2.0], sleep=pauses.append,
                command=str(script))  # fmt: skip
    assert (root / "bin-sh").exists() and not (root / "half-built").exists()
    assert pauses == [1.0, 2.0]
    assert len(said) == 2 and "Couldn't download" in said[0] and "trying again in 1 s" in said[0]
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv[0] == (f"--variant=minbase --components=main,contrib --include=systemd,python3 "
                       f"bookworm {root} http://deb.debian.org/debian")  # fmt: skip


def test_it_gives_up_naming_the_suite_the_mirror_and_the_error(tmp_path: Path) -> None:
    script = _stand_in(tmp_path, failures=5)
    with pytest.raises(HearthError) as caught:
        debootstrap(suite="bookworm", rootfs=tmp_path / "rootfs", mirror="http://mirror.lan/debian",
                    include=["systemd"], waits=[0.0], sleep=lambda _: None,
                    command=str(script))  # fmt: skip
    text = str(caught.value)
    assert "debootstrap bookworm from http://mirror.lan/debian failed" in text
    assert "2 attempts" in text and "Couldn't download" in text
