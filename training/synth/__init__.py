"""Spoof-synthesis corpus builder: ``python -m training.synth --help``.

Modules: ``base`` (generator protocol and registry), one module per generator
family (``world``, ``mlsa``, ``griffinlim``, ``piper_tts``, ``tts_cli`` for
espeak/flite/festival), ``channel`` (tel8k, mulaw, mp3, opus), ``audio``
(level, silence, FLAC I/O shared by all), ``corpus`` (plan, render, manifest),
``demo`` (the bundled demo clip). Dependencies: ``requirements.md``.
"""
