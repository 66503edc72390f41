"""Telephony inputs: the platforms' own protocols for forking call audio, each in its module.

* :mod:`.twilio`: Twilio Media Streams, WebSocket ``/v1/twilio`` on the server.
* :mod:`.audiohook`: Genesys Cloud AudioHook, WebSocket ``/v1/audiohook`` on the server.
* :mod:`.audiosocket`: Asterisk AudioSocket, its own TCP listener (``--input audiosocket``).

Each call becomes one detector stream per track (:data:`realtime.events.TRACKS`), fed like a
protocol-v1 stream (:mod:`.calls`). G.711 decoding: :mod:`.g711`.
"""
