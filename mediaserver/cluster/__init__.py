"""Running more than one server process: events and chat rooms shared over Redis.

redis_bus.py carries the event bus, lease.py decides which process owns a room, messages.py encodes what
travels between processes (no IO), chat_relay.py relays sockets to the owning Room and its frames back.
"""
