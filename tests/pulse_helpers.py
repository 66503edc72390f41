"""A private PulseAudio daemon with a virtual microphone, for tests that capture real audio.

Layout: ``module-null-sink`` (``rtd_sink``, mono, 48 kHz by default) whose monitor
``rtd_sink.monitor`` is the only source, hence the default source. What is played into the
sink (``paplay --device=rtd_sink``, paced in real time by the daemon) is what a capture
of the default source hears.

PortAudio reaches it through ALSA: ``libasound2-plugins`` defines the ALSA device
``pulse`` (it appears in PortAudio as the device named ``pulse``), and the pulse plugin
(libpulse) connects to the server in ``PULSE_SERVER``. So a capture process needs
:attr:`PulseAudio.env` in its environment when PortAudio initialises (PortAudio probes
devices once, and lists ``pulse`` only if a daemon answered then; the plugin reads
``PULSE_SERVER`` again at each stream open). In-process, call :func:`use_in_process`. In a
subprocess, e.g. ``realtime-detect --input mic --device pulse``, pass
``env={**os.environ, **pa.env}``.

Root: the daemon runs in user mode (``-n``: no default.pa, only the modules given; no
D-Bus, no autospawn); as root PulseAudio only warns ("not intended to be run as root"),
no ``--system`` needed. Everything it writes (socket, runtime dir, cookie, state) is
under the given directory: ``XDG_RUNTIME_DIR``, ``PULSE_RUNTIME_PATH``, ``PULSE_STATE_PATH``
and ``HOME`` point there, and the native protocol socket allows anonymous clients.

A CLI test would look like::

    with PulseAudio(tmp_path / "pulse") as pa:
        cli = subprocess.Popen(["realtime-detect", "--input", "mic", "--device", PORTAUDIO_DEVICE,
                                "--json", ...], env={**os.environ, **pa.env}, stdout=subprocess.PIPE)
        # once it listens (first event, or a short wait):
        assert pa.play(wav).wait() == 0
        cli.send_signal(signal.SIGINT)

Needs the Debian packages ``pulseaudio`` and ``pulseaudio-utils`` (``pactl``, ``paplay``),
plus ``libportaudio2`` and ``libasound2-plugins`` for PortAudio capture.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

SINK = "rtd_sink"
SOURCE = f"{SINK}.monitor"
PORTAUDIO_DEVICE = "pulse"  # the ALSA pulse plugin's device, as PortAudio names it


def missing() -> str | None:
    """Why a PulseAudio capture test cannot run here (a skip reason), or None."""
    for tool, pkg in (("pulseaudio", "pulseaudio"), ("pactl", "pulseaudio-utils"),
                      ("paplay", "pulseaudio-utils")):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install {pkg})"
    if not list(Path("/usr/lib").glob("*/alsa-lib/libasound_module_pcm_pulse.so")):
        return "ALSA pulse plugin not found (apt-get install libasound2-plugins)"
    return None


class PulseAudio:
    """A PulseAudio daemon in ``root`` (started by :meth:`start`, stopped by :meth:`stop`)."""

    def __init__(self, root: Path, rate: int = 48000, channels: int = 1) -> None:
        self.root = Path(root)
        self.rate = rate
        self.channels = channels
        self.socket = self.root / "native"
        self.log = self.root / "pulseaudio.log"
        self.env: dict[str, str] = {
            "PULSE_SERVER": f"unix:{self.socket}",
            "XDG_RUNTIME_DIR": str(self.root),
            "PULSE_RUNTIME_PATH": str(self.root / "pulse"),
            "PULSE_STATE_PATH": str(self.root / "state"),
            "HOME": str(self.root),  # the client and daemon look for ~/.config/pulse
        }
        self._proc: subprocess.Popen[bytes] | None = None

    def _run_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def start(self, timeout: float = 15.0) -> PulseAudio:
        """Start the daemon and wait until it answers; raise RuntimeError with its log if not."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "pulse").mkdir(mode=0o700, exist_ok=True)
        cmd = [
            "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no",
            "--disallow-exit", "--log-target=stderr", "--log-level=notice",
            "-L", f"module-native-protocol-unix auth-anonymous=1 socket={self.socket}",
            "-L", f"module-null-sink sink_name={SINK} rate={self.rate} channels={self.channels} "
                  "sink_properties=device.description=rtd-virtual-microphone",
        ]
        log = open(self.log, "ab")
        try:
            self._proc = subprocess.Popen(cmd, env=self._run_env(), stdout=log, stderr=log,
                                          stdin=subprocess.DEVNULL)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"pulseaudio exited with {self._proc.returncode}: {self.log_text()}")
            if self.socket.exists() and subprocess.run(
                    ["pactl", "info"], env=self._run_env(), capture_output=True, timeout=5).returncode == 0:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"pulseaudio did not answer within {timeout} s: {self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL) - what a sound server crash looks like to clients."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def pactl(self, *args: str) -> str:
        out = subprocess.run(["pactl", *args], env=self._run_env(), capture_output=True, text=True,
                             timeout=10)
        if out.returncode != 0:
            raise RuntimeError(f"pactl {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    def play_cmd(self, wav: Path) -> list[str]:
        """The command that plays ``wav`` into the virtual microphone in real time."""
        return ["paplay", f"--device={SINK}", str(wav)]

    def play(self, wav: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.play_cmd(wav), env=self._run_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)

    def __enter__(self) -> PulseAudio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def use_in_process(pa: PulseAudio, monkeypatch: object) -> None:
    """Point this process's PortAudio at ``pa`` (env via pytest's monkeypatch), rescanning the
    devices only if PortAudio does not list ``pulse`` yet.

    Rescan no more than that: re-initialising PortAudio closes every stream in the process, and
    blocks for good on one an earlier test left stuck in libpulse (a killed sound server can
    deadlock it; MicSource then abandons the stream). Nothing needs forgetting afterwards either:
    streams opened later connect to whatever ``PULSE_SERVER`` says then.
    """
    for k, v in pa.env.items():
        monkeypatch.setenv(k, v)  # type: ignore[attr-defined]
    from realtime.sources.audio_devices import import_sounddevice, input_devices

    devices, _ = input_devices(import_sounddevice())
    if all(d["name"] != PORTAUDIO_DEVICE for d in devices):
        rescan_portaudio()


def rescan_portaudio(timeout: float = 20.0) -> None:
    """Re-initialise PortAudio so it probes the ALSA devices again (with the current environment).

    Bounded, in a daemon thread: first MicSource's helper threads must leave PortAudio (its
    terminate would race them, or block for good behind a stuck close), then the rescan itself
    runs; a test must fail rather than hang the run.
    """
    import threading

    from realtime.sources import portaudio_calls
    from realtime.sources.audio_devices import import_sounddevice, rescan_devices

    deadline = time.monotonic() + timeout
    for t in list(portaudio_calls.portaudio_threads):
        t.join(max(0.0, deadline - time.monotonic()))
    if portaudio_calls.portaudio_threads:
        raise TimeoutError(f"a MicSource stream open or close did not return within {timeout:g} s "
                           "(stuck in libpulse?); re-initialising PortAudio would block behind it")
    sd = import_sounddevice()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            rescan_devices(sd)
        except BaseException as e:  # reported in the caller's thread
            failure.append(e)

    t = threading.Thread(target=run, name="portaudio-rescan", daemon=True)
    t.start()
    t.join(max(0.0, deadline - time.monotonic()))
    if t.is_alive():
        raise TimeoutError(f"PortAudio did not re-initialise within {timeout:g} s")
    if failure:
        raise failure[0]
