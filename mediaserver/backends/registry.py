"""Which back-ends this server can put a stream on: builtin always, mux and ivs when their credentials are
configured. The API looks a stream's back-end up here by name; `mediaserver backends check` checks them all."""
from __future__ import annotations

from mediaserver.backends.base import BACKENDS, StreamBackend, Unsupported
from mediaserver.backends.builtin import BuiltinBackend
from mediaserver.config import Config
from mediaserver.playback_tokens import PlaybackSigner


class BackendRegistry:
    def __init__(self, backends: dict[str, StreamBackend]) -> None:
        self._backends = dict(backends)

    def add(self, backend: StreamBackend) -> None:
        self._backends[backend.name] = backend

    def names(self) -> list[str]:
        return [name for name in BACKENDS if name in self._backends]

    def get(self, name: str) -> StreamBackend:
        """The back-end called name; Unsupported (saying what to configure) if it isn't available."""
        backend = self._backends.get(name)
        if backend is None:
            if name not in BACKENDS:
                raise Unsupported(f"unknown back-end {name!r} (one of {', '.join(BACKENDS)})")
            raise Unsupported(f"the {name} back-end is not configured on this server: set its credentials in "
                              f"config.toml [{name}] (or the environment) and run `mediaserver backends check`")
        return backend

    async def check(self) -> dict[str, list[str]]:
        """Each configured back-end's problems (empty list: all good)."""
        return {name: await self._backends[name].check() for name in self.names()}


def build_registry(config: Config, signer: PlaybackSigner) -> BackendRegistry:
    registry = BackendRegistry({"builtin": BuiltinBackend(config, signer)})
    if config.mux.configured():
        from mediaserver.backends.mux import MuxBackend

        registry.add(MuxBackend(config.mux))
    if config.ivs.configured():
        from mediaserver.backends.ivs import IvsBackend

        registry.add(IvsBackend(config.ivs))
    return registry
