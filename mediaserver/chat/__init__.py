"""The live room of each stream: chat, reactions, presence and moderation.

`hub` opens rooms, `room` runs one (sans-IO apart from its queues), `protocol` parses frames and holds the
limits, `moderation` judges messages, `names`/`text` normalise what people type, `sanctions` tracks bans and
time-outs, `store` persists it all in SQLite.
"""
