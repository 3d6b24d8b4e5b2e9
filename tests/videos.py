"""Real test videos, fetched from package registries on first use and cached.

* `vtest.avi` (768 x 576, 10 fps, 795 frames; several pedestrians about 90 px tall) from Debian's
  `opencv-doc` package: `apt-get download` (no root needed) and `dpkg-deb`, only that file kept.
* `demo.mp4` (1768 x 994, 30 fps, 230 frames; a woman walking across, a man on a box) from the
  `sports2d` wheel on PyPI: `pip download --no-deps`, only that file kept.
* Pose2Sim's synchronised 4-camera demos (portrait 1080 x 1920 or 1088 x 1920, 60 fps, 100 frames:
  a man's throwing-like movement on a force plate; in `MultiPerson` a woman stands beside him) from
  the `pose2sim` wheel on PyPI: one `pip download --no-deps` for all 8 videos, only those kept, in
  the folder `pose2sim-0.10.49/` (moved into place whole, so it is complete or absent).

The cache folder is `$BPMT_TEST_VIDEOS`, else `~/.cache/bpmt-test-videos`. A fetch that fails
(no network, no apt) raises `FetchError` with the reason, which the tests turn into a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

OPENCV_DOC_MEMBER = "./usr/share/doc/opencv-doc/examples/data/vtest.avi"
SPORTS2D = "sports2d==0.8.34"
SPORTS2D_MEMBER = "Sports2D/Demo/demo.mp4"
POSE2SIM = "pose2sim==0.10.49"
POSE2SIM_DEMOS = ("SinglePerson", "MultiPerson")
POSE2SIM_CAMERAS = ("cam01", "cam02", "cam03", "cam04")
TIMEOUT_S = 300


class FetchError(Exception):
    """A test video could not be fetched (the message says why)."""


def cache_dir() -> Path:
    return Path(os.environ.get("BPMT_TEST_VIDEOS") or Path.home() / ".cache" / "bpmt-test-videos")


def vtest_avi() -> Path:
    """Path of `vtest.avi`, fetched from Debian's `opencv-doc` if not cached yet."""
    return _cached("vtest.avi", _fetch_vtest)


def demo_mp4() -> Path:
    """Path of Sports2D's `demo.mp4`, fetched from its PyPI wheel if not cached yet."""
    return _cached("demo.mp4", _fetch_demo)


def pose2sim_videos() -> dict[str, Path]:
    """Paths of Pose2Sim's demo videos keyed `"SinglePerson/cam01"` ... `"MultiPerson/cam04"`,
    fetched from its PyPI wheel if not cached yet."""
    folder = cache_dir() / f"pose2sim-{POSE2SIM.split('==')[1]}"
    wanted = {f"{demo}/{camera}": folder / demo / f"{camera}.mp4"
              for demo in POSE2SIM_DEMOS for camera in POSE2SIM_CAMERAS}
    if not _complete(wanted.values()):
        _cached_folder(folder, _fetch_pose2sim)
        if not _complete(wanted.values()):
            raise FetchError(f"{folder} lacks some of the {len(wanted)} Pose2Sim videos")
    return wanted


def _complete(paths) -> bool:
    return all(path.is_file() and path.stat().st_size > 0 for path in paths)


def _cached_folder(target: Path, fetch) -> None:
    """Fill the cache folder `target` with what `fetch(work)` left in its returned folder: copied
    beside `target` first, then renamed, so that `target` is either complete or absent."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(f"cannot create the cache folder {target.parent}: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="bpmt-fetch-") as work:
        fetched = fetch(Path(work))
        partial = target.with_name(f".{target.name}.{os.getpid()}.part")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(fetched, partial)
        if target.exists():                     # an incomplete folder left by hand: replace it
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(partial, target)
        except OSError:                         # another process put its copy in place first
            shutil.rmtree(partial, ignore_errors=True)


def _cached(name: str, fetch) -> Path:
    target = cache_dir() / name
    if target.is_file() and target.stat().st_size > 0:
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(f"cannot create the cache folder {target.parent}: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="bpmt-fetch-") as work:
        fetched = fetch(Path(work))
        partial = target.with_name(f".{name}.{os.getpid()}.part")   # the rename makes the cache entry atomic
        shutil.copyfile(fetched, partial)
        os.replace(partial, target)
    return target


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except FileNotFoundError:
        raise FetchError(f"{command[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"{' '.join(command)} took over {TIMEOUT_S} s") from None
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise FetchError(f"{' '.join(command)} failed: {last[0]}")
    return done


def _fetch_vtest(work: Path) -> Path:
    _run(["apt-get", "download", "opencv-doc"], work)
    debs = sorted(work.glob("opencv-doc_*.deb"))
    if not debs:
        raise FetchError("apt-get download opencv-doc left no .deb file")
    out = work / "vtest.avi"
    try:
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[0])], stdout=subprocess.PIPE) as dpkg:
            with tarfile.open(fileobj=dpkg.stdout, mode="r|") as tar:
                for member in tar:
                    if member.name == OPENCV_DOC_MEMBER and member.isfile():
                        with tar.extractfile(member) as src, open(out, "wb") as dst:
                            shutil.copyfileobj(src, dst)
                        break
            dpkg.stdout.close()
            dpkg.kill()
    except FileNotFoundError:
        raise FetchError("dpkg-deb is not installed") from None
    except (tarfile.TarError, OSError) as exc:
        raise FetchError(f"cannot unpack {debs[0].name}: {exc}") from None
    if not out.is_file():
        raise FetchError(f"{debs[0].name} holds no {OPENCV_DOC_MEMBER}")
    return out


def _fetch_demo(work: Path) -> Path:
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(work), SPORTS2D],
         work)
    wheels = sorted(work.glob("sports2d-*.whl"))
    if not wheels:
        raise FetchError(f"pip download {SPORTS2D} left no wheel")
    try:
        with zipfile.ZipFile(wheels[0]) as wheel:
            with wheel.open(SPORTS2D_MEMBER) as src, open(work / "demo.mp4", "wb") as dst:
                shutil.copyfileobj(src, dst)
    except (KeyError, zipfile.BadZipFile, OSError) as exc:
        raise FetchError(f"cannot take {SPORTS2D_MEMBER} out of {wheels[0].name}: {exc}") from None
    return work / "demo.mp4"


def _fetch_pose2sim(work: Path) -> Path:
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(work), POSE2SIM],
         work)
    wheels = sorted(work.glob("pose2sim-*.whl"))
    if not wheels:
        raise FetchError(f"pip download {POSE2SIM} left no wheel")
    out = work / "videos"
    member = "?"
    try:
        with zipfile.ZipFile(wheels[0]) as wheel:
            for demo in POSE2SIM_DEMOS:
                (out / demo).mkdir(parents=True)
                for camera in POSE2SIM_CAMERAS:
                    member = f"Pose2Sim/Demo_{demo}/videos/{camera}.mp4"
                    with wheel.open(member) as src, open(out / demo / f"{camera}.mp4", "wb") as dst:
                        shutil.copyfileobj(src, dst)
    except (KeyError, zipfile.BadZipFile, OSError) as exc:
        raise FetchError(f"cannot take {member} out of {wheels[0].name}: {exc}") from None
    return out
