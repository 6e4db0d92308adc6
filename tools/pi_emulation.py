"""Run predict.py and app.py as a Raspberry Pi would: aarch64 code under user-mode QEMU.

    python -m tools.pi_emulation setup                              # sysroot + wheels, once (~1 min)
    python -m tools.pi_emulation run -- predict.py imgs/test_image.jpeg --json
    python -m tools.pi_emulation run --cpu cortex-a72 -- -c "import platform; print(platform.machine())"
    python -m tools.pi_emulation compare imgs/test_image.jpeg       # points vs this machine's
    python -m tools.pi_emulation compare --os trixie --cpu cortex-a76 --cpu max imgs/test_image.jpeg --json

What runs is Debian's arm64 Python (Raspberry Pi OS 64-bit is Debian: bookworm has Python
3.11, trixie 3.13) with the aarch64 wheels of requirements-pi.txt, on an emulated Pi 4
(Cortex-A72) or Pi 5 (Cortex-A76) core. It tests that the Pi gets the same answer; it says
nothing about the Pi's speed (QEMU translates every instruction).

Needs qemu-user-static (Debian: apt-get install qemu-user-static), apt-get and pip. The Debian
packages are fetched with ``apt-get download`` through a private apt configuration (its own
lists, cache and empty dpkg status: the host's apt and dpkg are not touched) and unpacked
with ``dpkg -x``; the wheels with ``pip download`` for the aarch64 platform. Everything goes
to the cache folder (--cache, or $LANDMARKS_PI_CACHE, default .cache/pi_emulation/, ignored by
git) and is reused: the first setup downloads about 90 MB, later runs start at once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[1]
REQUIREMENTS_PI = REPO_DIR / "requirements-pi.txt"
CACHE_ENV = "LANDMARKS_PI_CACHE"
DEFAULT_CACHE = REPO_DIR / ".cache" / "pi_emulation"
QEMU = "qemu-aarch64-static"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY = "http://deb.debian.org/debian-security"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

# Raspberry Pi OS 64-bit release -> its Python.
PYTHON_OF_OS = {"bookworm": "3.11", "trixie": "3.13"}
# Pulled in by apt-cache's closure but used only by package maintainer scripts.
NOT_NEEDED = {"dpkg", "tar", "install-info", "perl", "perl-base", "mailcap", "mime-support",
              "readline-common", "debconf", "cdebconf"}
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64",
                   "manylinux2014_aarch64")


@dataclass(frozen=True)
class PiCpu:
    """An emulated core: QEMU's -cpu model and the /proc/cpuinfo entry a Pi's kernel writes."""
    qemu_cpu: str
    model: str
    cpu_part: str
    cpu_variant: str
    cpu_revision: int
    features: str


PI4 = PiCpu("cortex-a72", "Raspberry Pi 4 Model B Rev 1.4", "0xd08", "0x0", 3,
            "fp asimd evtstrm crc32 cpuid")
PI5 = PiCpu("cortex-a76", "Raspberry Pi 5 Model B Rev 1.0", "0xd0b", "0x4", 1,
            "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
            "lrcpc dcpop asimddp")
CPUS = {cpu.qemu_cpu: cpu for cpu in (PI4, PI5)}
PI_CORES = 4


class EmulationError(RuntimeError):
    """The emulation cannot be set up; the message says what is missing."""


def cpuinfo_text(cpu: PiCpu, cores: int = PI_CORES) -> str:
    """/proc/cpuinfo as the Pi's 64-bit kernel writes it: one entry per core, then the board."""
    entry = ("processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
             "CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\n"
             "CPU revision\t: {revision}\n\n")
    entries = "".join(entry.format(n=n, features=cpu.features, variant=cpu.cpu_variant,
                                   part=cpu.cpu_part, revision=cpu.cpu_revision) for n in range(cores))
    return entries + f"Model\t\t: {cpu.model}\n"


def cpu_for(qemu_cpu: str) -> PiCpu:
    """The Pi core for a QEMU -cpu value; other models (``max``, ``max,sme=off``, ...) get a
    Pi 5's /proc/cpuinfo, since LiteRT needs an ARM one to start."""
    return CPUS.get(qemu_cpu, PI5)


def find_qemu() -> str:
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise EmulationError(f"{QEMU} not found: apt-get install qemu-user-static "
                             "(.ci/run installs it)")
    return qemu


def run_quiet(command: list, what: str, env=None, cwd=None) -> str:
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise EmulationError(f"{what} failed ({' '.join(map(str, command[:3]))} ...):\n  "
                             + "\n  ".join(tail))
    return result.stdout


# ---------------------------------------------------------------------------------------
# The sysroot: Debian's arm64 python and its libraries
# ---------------------------------------------------------------------------------------

def private_apt_env(apt_dir: Path, release: str) -> dict:
    """Environment for apt-get/apt-cache that sees only Debian `release` for arm64, with its
    own lists, cache and an empty dpkg status (APT_CONFIG), so the host stays as it is."""
    for sub in ("lists/partial", "cache/archives/partial", "sources.list.d"):
        (apt_dir / sub).mkdir(parents=True, exist_ok=True)
    (apt_dir / "status").touch()
    option = f"[arch=arm64 signed-by={DEBIAN_KEYRING}]"
    (apt_dir / "sources.list").write_text(
        f"deb {option} {DEBIAN_MIRROR} {release} main\n"
        f"deb {option} {DEBIAN_MIRROR} {release}-updates main\n"
        f"deb {option} {DEBIAN_SECURITY} {release}-security main\n")
    (apt_dir / "apt.conf").write_text(
        'APT::Architecture "arm64";\nAPT::Architectures { "arm64"; };\n'
        'APT::Sandbox::User "root";\n'  # the private folders are root's; no _apt warnings
        f'Dir::Etc::SourceList "{apt_dir}/sources.list";\n'
        f'Dir::Etc::SourceParts "{apt_dir}/sources.list.d";\n'
        f'Dir::State::Lists "{apt_dir}/lists";\nDir::State::status "{apt_dir}/status";\n'
        f'Dir::Cache "{apt_dir}/cache";\nAcquire::Languages "none";\n')
    return {**os.environ, "APT_CONFIG": str(apt_dir / "apt.conf")}


def package_closure(apt_env: dict, roots: list[str]) -> list[str]:
    """The packages `roots` need at run time (Depends and Pre-Depends, recursively)."""
    output = run_quiet(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
                        "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *roots],
                       "apt-cache depends", apt_env)
    names = {line.strip() for line in output.splitlines()
             if line and not line[0].isspace() and not line.startswith("<")}
    return sorted(name for name in names
                  if name not in NOT_NEEDED and not name.startswith(("perl-modules", "libperl")))


def build_sysroot(cache: Path, release: str, log=print) -> Path:
    """An unpacked arm64 Debian `release` root holding python3.X and its libraries."""
    python = PYTHON_OF_OS[release]
    sysroot = cache / f"{release}-arm64-sysroot"
    if (sysroot / ".complete").is_file():
        return sysroot
    for tool in ("apt-get", "apt-cache", "dpkg"):
        if shutil.which(tool) is None:
            raise EmulationError(f"{tool} not found: the sysroot is made from Debian packages")
    apt_dir = cache / f"{release}-arm64-apt"
    apt_env = private_apt_env(apt_dir, release)
    log(f"fetching the package lists of Debian {release} arm64")
    run_quiet(["apt-get", "update", "-q"], "apt-get update", apt_env)
    packages = package_closure(apt_env, [f"python{python}", "libstdc++6"])
    debs = apt_dir / "debs"
    shutil.rmtree(debs, ignore_errors=True)
    debs.mkdir()
    log(f"downloading {len(packages)} packages: {' '.join(packages)}")
    run_quiet(["apt-get", "download", "-q", *packages], "apt-get download", apt_env, cwd=debs)
    found = sorted(debs.glob("*.deb"))
    missing = [name for name in packages if not any(deb.name.startswith(f"{name}_") for deb in found)]
    if missing:
        raise EmulationError(f"apt-get download: no package file for {', '.join(missing)} in {debs}")
    staging = Path(tempfile.mkdtemp(prefix=sysroot.name + ".", dir=cache))
    for deb in found:
        run_quiet(["dpkg", "-x", str(deb), str(staging)], f"dpkg -x {deb.name}")
    for top in ("bin", "sbin", "lib"):  # merged /usr: trixie leaves these links to base-files
        if not (staging / top).exists() and (staging / "usr" / top).is_dir():
            (staging / top).symlink_to(Path("usr") / top)
    if not (staging / "usr" / "bin" / f"python{python}").is_file():
        raise EmulationError(f"{staging}: python{python} missing after unpacking")
    shutil.rmtree(sysroot, ignore_errors=True)
    staging.rename(sysroot)
    (sysroot / ".complete").write_text("\n".join(deb.name for deb in found) + "\n")
    shutil.rmtree(apt_dir)  # lists and .deb files: the unpacked root is all that is used
    return sysroot


# ---------------------------------------------------------------------------------------
# The wheels of requirements-pi.txt for aarch64
# ---------------------------------------------------------------------------------------

def install_wheels(cache: Path, python: str, requirements: Path = REQUIREMENTS_PI, log=print) -> Path:
    """A folder (for PYTHONPATH) with the aarch64 wheels of `requirements` for CPython
    `python` installed; remade when the requirements change."""
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    site = cache / f"site-cp{python.replace('.', '')}-aarch64-{digest}"
    if (site / ".complete").is_file():
        return site
    abi = "cp" + python.replace(".", "")
    target = ["--only-binary", ":all:", "--python-version", python, "--implementation", "cp",
              "--abi", abi, *(arg for platform in WHEEL_PLATFORMS for arg in ("--platform", platform))]
    wheels = cache / f"wheels-{abi}-aarch64"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    shutil.rmtree(wheels, ignore_errors=True)
    log(f"downloading the aarch64 wheels of {requirements.name} for Python {python}")
    run_quiet([*pip, "download", *target, "-d", str(wheels), "-r", str(requirements)], "pip download")
    shutil.rmtree(site, ignore_errors=True)
    # The download resolved the requirements for `python`: install exactly those files
    # (pip checks Requires-Python against its own interpreter, not --python-version).
    run_quiet([*pip, "install", *target, "--no-deps", "--no-index", "--ignore-requires-python",
               "--target", str(site), *map(str, sorted(wheels.glob("*.whl")))], "pip install --target")
    (site / ".complete").write_text(requirements.read_text())
    shutil.rmtree(wheels)  # installed; pip's own cache keeps the downloads
    return site


# ---------------------------------------------------------------------------------------
# Running under QEMU
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PiEnvironment:
    """A ready emulated Pi: QEMU, the Debian root, the installed wheels."""
    qemu: str
    sysroot: Path
    site: Path
    python: str
    cache: Path

    def root_for(self, qemu_cpu: str) -> Path:
        """The root given to QEMU's -L for `qemu_cpu`: the sysroot's folders (linked) and a
        /proc/cpuinfo of that Pi. QEMU 7.2 shows a program the host's x86 /proc/cpuinfo,
        where LiteRT's CPU detection (the cpuinfo library) finds no ARM core and aborts;
        with -L it reads this one instead."""
        cpu = cpu_for(qemu_cpu)
        root = self.cache / f"{self.sysroot.name}-{cpu.qemu_cpu}"
        (root / "proc").mkdir(parents=True, exist_ok=True)
        for entry in self.sysroot.iterdir():
            link, target = root / entry.name, Path("..") / self.sysroot.name / entry.name
            if entry.name == "proc" or (link.is_symlink() and Path(os.readlink(link)) == target):
                continue
            if link.is_symlink():
                link.unlink()
            link.symlink_to(target)
        cpuinfo = root / "proc" / "cpuinfo"
        if not cpuinfo.is_file() or cpuinfo.read_text() != cpuinfo_text(cpu):
            cpuinfo.write_text(cpuinfo_text(cpu))
        return root

    def command(self, qemu_cpu: str, args: list[str]) -> list[str]:
        """The command line that runs ``python{3.X} args...`` on an emulated `qemu_cpu`."""
        root = self.root_for(qemu_cpu)
        return [self.qemu, "-cpu", qemu_cpu, "-L", str(root),
                str(root / "usr" / "bin" / f"python{self.python}"), *args]

    def env(self, extra: dict | None = None) -> dict:
        """A clean environment for the emulated Python: no host library or Python paths."""
        keep = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TERM", "LANDMARKS_DATA")
                if name in os.environ}
        return {**keep, "PYTHONPATH": str(self.site), "PYTHONNOUSERSITE": "1",
                "PYTHONDONTWRITEBYTECODE": "1", **(extra or {})}

    def run(self, qemu_cpu: str, args: list[str], timeout: float | None = None, **kwargs):
        """subprocess.run of python ``args`` on an emulated `qemu_cpu`, in the repository."""
        kwargs.setdefault("cwd", REPO_DIR)
        return subprocess.run(self.command(qemu_cpu, args), env=self.env(), timeout=timeout, **kwargs)


def default_cache() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def prepare(release: str = "bookworm", cache: Path | None = None, log=print,
            qemu: str | None = None) -> PiEnvironment:
    """QEMU found (`qemu`, or qemu-aarch64-static on PATH), the sysroot and wheels made (or
    taken from the cache): ready to run."""
    if release not in PYTHON_OF_OS:
        raise EmulationError(f"--os {release}: unknown, choose from {', '.join(PYTHON_OF_OS)}")
    found = shutil.which(qemu) if qemu else find_qemu()
    if found is None:
        raise EmulationError(f"--qemu {qemu}: no such program")
    cache = Path(cache or default_cache()).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    sysroot = build_sysroot(cache, release, log)
    site = install_wheels(cache, PYTHON_OF_OS[release], log=log)
    return PiEnvironment(found, sysroot, site, PYTHON_OF_OS[release], cache)


def qemu_version(qemu: str) -> tuple[int, int]:
    """(major, minor) of a qemu-aarch64 binary, from its --version line."""
    first = run_quiet([qemu, "--version"], f"{qemu} --version").split("\n", 1)[0]
    try:
        major, minor = first.split("version ", 1)[1].split(".")[:2]
        return int(major), int(minor)
    except (IndexError, ValueError):
        raise EmulationError(f"{qemu}: cannot read its version from {first!r}") from None


def sme_warning(qemu_cpu: str, version: tuple[int, int]) -> str | None:
    """Why `qemu_cpu` on this QEMU gives wrong int8 points, or None. QEMU 7.2's emulation of
    SME (the scalable matrix extension, in ``-cpu max``) is faulty: LiteRT's XNNPACK runs
    its int8 layers on SME kernels there, and the landmarks came out up to 105 px wrong,
    while QEMU 10.0 and 11.1 give the x86 points (docs/raspberry_pi.md)."""
    options = qemu_cpu.split(",")
    if options[0] != "max" or "sme=off" in options or "sve=off" in options or version >= (10, 0):
        return None
    return (f"-cpu {qemu_cpu} on QEMU {version[0]}.{version[1]} emulates SME wrongly: int8 "
            "models give wrong points (use max,sme=off, a Pi core, or QEMU >= 10)")


# ---------------------------------------------------------------------------------------
# Comparing with this machine
# ---------------------------------------------------------------------------------------

def predict_json(command: list[str], images: list[str], model: str, out_dir: Path, env=None,
                 options: tuple = ()) -> list[dict]:
    """predict.py --json's records of `images` (a list, even for one image); `options` are
    more predict.py flags."""
    result = subprocess.run([*command, "predict.py", *images, "--model", model, "--json",
                             "--out", str(out_dir), *options], cwd=REPO_DIR, env=env,
                            capture_output=True, text=True, timeout=900)
    if result.returncode not in (0, 3):  # 3: some image had no face, still comparable
        tail = "\n  ".join(result.stderr.strip().splitlines()[-5:])
        raise EmulationError(f"predict.py exited with {result.returncode}:\n  {tail}")
    records = json.loads(result.stdout)
    return records if isinstance(records, list) else [records]


def largest_difference(reference: list[dict], emulated: list[dict]) -> tuple[float, float]:
    """(max |box difference|, max |point difference|) in pixels over all images and faces;
    infinite when the images or faces do not pair up."""
    box_diff = point_diff = 0.0
    if [r["image"] for r in reference] != [r["image"] for r in emulated]:
        return float("inf"), float("inf")
    for ref, emu in zip(reference, emulated):
        if len(ref["faces"]) != len(emu["faces"]):
            return float("inf"), float("inf")
        for ref_face, emu_face in zip(ref["faces"], emu["faces"]):
            box_diff = max(box_diff, max(abs(a - b) for a, b in zip(ref_face["box"], emu_face["box"])))
            point_diff = max(point_diff, max(abs(a - b) for ref_point, emu_point in
                                             zip(ref_face["landmarks"], emu_face["landmarks"])
                                             for a, b in zip(ref_point, emu_point)))
    return box_diff, point_diff


def compare(pi: PiEnvironment, images: list[str], models: list[str], qemu_cpus: list[str],
            host_python: str, tolerance_px: float, detector: str = "haar") -> list[dict]:
    """predict.py on this machine and on each emulated core: one row per (core, model)."""
    rows = []
    options = ("--detector", detector)
    with tempfile.TemporaryDirectory(prefix="pi_emulation.") as tmp:
        for model in models:
            reference = predict_json([host_python], images, model, Path(tmp) / "host", options=options)
            for qemu_cpu in qemu_cpus:
                emulated = predict_json(pi.command(qemu_cpu, []), images, model,
                                        Path(tmp) / qemu_cpu, env=pi.env(), options=options)
                box_diff, point_diff = largest_difference(reference, emulated)
                rows.append({"cpu": qemu_cpu, "model": Path(model).name, "images": len(reference),
                             "faces": sum(len(r["faces"]) for r in reference),
                             "max_box_diff_px": box_diff, "max_point_diff_px": point_diff,
                             "same": point_diff <= tolerance_px and box_diff <= tolerance_px})
    return rows


def print_table(rows: list[dict], tolerance_px: float) -> None:
    print(f"{'cpu':<22} {'model':<26} {'images':>6} {'faces':>5} {'box px':>8} {'points px':>9}  "
          f"within {tolerance_px:g} px")
    for row in rows:
        print(f"{row['cpu']:<22} {row['model']:<26} {row['images']:>6} {row['faces']:>5} "
              f"{row['max_box_diff_px']:>8.3f} {row['max_point_diff_px']:>9.3f}  "
              f"{'yes' if row['same'] else 'NO'}")


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.pi_emulation",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--os", default="bookworm", choices=sorted(PYTHON_OF_OS),
                        help="Raspberry Pi OS (Debian) release: its Python "
                             f"({', '.join(f'{k} {v}' for k, v in PYTHON_OF_OS.items())})")
    common.add_argument("--cache", type=Path, help=f"download cache (default ${CACHE_ENV} or "
                                                   f"{DEFAULT_CACHE.relative_to(REPO_DIR)})")
    common.add_argument("--qemu", help=f"the qemu-aarch64 binary (default: {QEMU} on PATH)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("setup", parents=[common], help="fetch the sysroot and wheels, then stop")
    run = commands.add_parser("run", parents=[common], help="run the emulated python with ARGS")
    run.add_argument("--cpu", default=PI5.qemu_cpu,
                     help=f"QEMU -cpu value: {PI4.qemu_cpu} (Pi 4), {PI5.qemu_cpu} (Pi 5), or any "
                          "other QEMU model, e.g. max,sme=off (default %(default)s)")
    run.add_argument("args", nargs=argparse.REMAINDER, help="python's arguments, after --")
    check = commands.add_parser("compare", parents=[common],
                                help="predict.py here and emulated: the largest point difference")
    check.add_argument("images", nargs="+", help="image files (or folders) for predict.py")
    check.add_argument("--cpu", action="append", dest="cpus",
                       help=f"QEMU -cpu value, repeatable (default: {PI4.qemu_cpu} and {PI5.qemu_cpu})")
    check.add_argument("--model", action="append", dest="models",
                       help="a .tflite, repeatable (default: the int8 and float32 models)")
    check.add_argument("--host-python", default=sys.executable,
                       help="python that runs the reference on this machine (default: this one)")
    check.add_argument("--detector", default="haar",
                       help="predict.py's face detector (default %(default)s: its boxes are whole "
                            "pixels on any machine; BlazeFace's differ by ~1e-5 px between x86 "
                            "and ARM, which moves int8 points by up to ~2 px, see "
                            "docs/raspberry_pi.md)")
    check.add_argument("--tolerance", type=float, default=0.5, help="pixels (default %(default)s)")
    check.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)

    log = (lambda message: print(message, file=sys.stderr, flush=True))
    try:
        pi = prepare(args.os, args.cache, log, args.qemu)
        cpus = [args.cpu] if args.command == "run" else (args.cpus or [PI4.qemu_cpu, PI5.qemu_cpu])
        if args.command != "setup":
            version = qemu_version(pi.qemu)
            for qemu_cpu in cpus:
                warning = sme_warning(qemu_cpu, version)
                if warning:
                    log(f"warning: {warning}")
        if args.command == "setup":
            print(f"ready: {pi.sysroot} (Python {pi.python}), wheels in {pi.site}")
            return 0
        if args.command == "run":
            python_args = args.args[1:] if args.args[:1] == ["--"] else args.args
            return pi.run(args.cpu, python_args, cwd=Path.cwd()).returncode
        models = args.models or [str(REPO_DIR / "models" / f"landmarks_{kind}.tflite")
                                 for kind in ("int8", "float32")]
        images = [str(Path(image).resolve()) for image in args.images]  # predict.py runs in the repo
        rows = compare(pi, images, [str(Path(model).resolve()) for model in models], cpus,
                       args.host_python, args.tolerance, args.detector)
    except EmulationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print_table(rows, args.tolerance)
    return 0 if all(row["same"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
